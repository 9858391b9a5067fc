# ImageNet-1k, the Table 4 (120 epochs) data pipeline: the "simple data
# augmentation" of the official PyTorch ImageNet example the paper follows,
# RandomResizedCrop 224 + horizontal flip; test: short edge 256, centre crop
# 224. Pillow bilinear resizing, as torchvision's transforms in the official
# training code.
#
# Batch: 32 images per GPU x 8 GPUs = the paper's global batch of 256. On
# another number of GPUs keep the global batch (e.g. 64 x 4) or set
# --cfg-options auto_scale_lr.enable=True to scale the LR linearly.
#
# Expected layout (tools/prepare_imagenet.py checks it):
#   data/imagenet/train/<wnid>/*.JPEG      1000 class folders
#   data/imagenet/val/<wnid>/*.JPEG        by class, or
#   data/imagenet/val/*.JPEG + data/imagenet/meta/val.txt ("<file> <label>")
dataset_type = 'ImageNet'
data_root = 'data/imagenet'

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224, backend='pillow',
         interpolation='bilinear'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=256, edge='short', backend='pillow',
         interpolation='bilinear'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]

train_dataloader = dict(
    batch_size=32,  # per GPU; x 8 GPUs = 256
    num_workers=8,
    persistent_workers=True,
    pin_memory=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='train',
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=32,
    num_workers=8,
    persistent_workers=True,
    pin_memory=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='val',
        pipeline=test_pipeline))
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_dataloader = val_dataloader
test_evaluator = val_evaluator
