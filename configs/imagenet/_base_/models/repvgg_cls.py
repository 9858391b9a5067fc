# ImageNet classifier around THIS project's RepVGG backbone (mmpretrain's
# ImageClassifier + GlobalAveragePooling + LinearClsHead).
#
# Registry scope: the classification configs run with
# default_scope='mmpretrain' (ImageClassifier, the ImageNet dataset,
# AutoAugment, Mixup, Accuracy and the visualizer all live in mmpretrain's
# registries), while the backbone is named 'mmseg.RepVGG': mmengine resolves a
# "scope.Name" type in that scope's registry whatever the current scope is,
# so this is the class of repvgg_seg.models.RepVGG (registered in mmseg's
# MODELS by `import repvgg_seg`, see custom_imports in default_runtime.py),
# never mmpretrain's own 'RepVGG' (another implementation with other key
# names). The classifier therefore saves the backbone under exactly the key
# names the segmentation configs load (backbone.stage0..., official names).
#
# out_indices=(4,): only the last stage (stride 32) feeds the pooling; the
# head's in_channels is that stage's width int(512 * b) (set per arch).
num_classes = 1000
model = dict(
    type='ImageClassifier',
    data_preprocessor=dict(
        type='ClsDataPreprocessor',
        num_classes=num_classes,  # for the one-hot labels of Mixup
        # RGB mean/std of ImageNet, as the official training code (and the
        # segmentation configs) use
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        to_rgb=True),
    backbone=dict(
        type='mmseg.RepVGG',
        arch='A0',
        out_indices=(4, ),
        deploy=False,
        norm_cfg=dict(type='BN', requires_grad=True)),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=num_classes,
        in_channels=1280,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, 5)))
