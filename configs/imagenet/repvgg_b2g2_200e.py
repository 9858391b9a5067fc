# RepVGG-B2g2 on ImageNet, the paper's 200-epoch recipe (Table 5): 5-epoch
# warm-up + cosine, AutoAugment, label smoothing 0.1, mixup 0.2, batch 32 x 8
# GPUs. Not in the paper's Table 5.
_base_ = [
    './_base_/models/repvgg_cls_lbs_mixup.py',
    './_base_/datasets/imagenet_200e.py',
    './_base_/schedules/sgd_cosine_warmup_200e.py',
    './_base_/default_runtime.py'
]
model = dict(
    backbone=dict(arch='B2g2'),
    head=dict(in_channels=2560))  # stage-4 width int(512 * 5)
