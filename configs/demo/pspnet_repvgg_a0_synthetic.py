# The embedded demo (`make demo`): PSPNet-RepVGG-A0 trained from scratch on
# the synthetic mini-Cityscapes that tools/make_synthetic_cityscapes.py
# generates, on a 2-core CPU in about 10 minutes. Same model family and data
# pipeline as the Table 8 configs, scaled down: no dilation (output stride 32:
# the dilated modes cost 4.5x more MACs, too slow to train on a CPU in
# minutes; they are covered by the tests), BN instead of SyncBN, 256x256
# crops, narrower heads, AdamW and a short schedule.
_base_ = [
    '../_base_/models/pspnet_repvgg.py',
    '../_base_/datasets/cityscapes_713x713.py', '../_base_/default_runtime.py'
]
norm_cfg = dict(type='BN', requires_grad=True)
crop_size = (256, 256)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(arch='A0', dilation=None, norm_cfg=norm_cfg),
    decode_head=dict(in_channels=1280, channels=128, norm_cfg=norm_cfg,
                     dropout_ratio=0.0, align_corners=False),
    auxiliary_head=dict(in_channels=192, channels=64, norm_cfg=norm_cfg,
                        align_corners=False),
    test_cfg=dict(mode='whole'))

data_root = 'data/synthetic_cityscapes/'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(512, 256), ratio_range=(0.75, 1.5),
         keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(512, 256), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')
]
# mmseg's CityscapesDataset reads the synthetic set unchanged (same layout)
train_dataloader = dict(
    batch_size=8,
    num_workers=1,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=1,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

max_iters = 300
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-3, weight_decay=1e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, begin=0, end=20, by_epoch=False),
    dict(type='PolyLR', power=0.9, eta_min=0.0, begin=20, end=max_iters,
         by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=100,
                    max_keep_ckpts=2, save_last=True))
env_cfg = dict(cudnn_benchmark=False)
randomness = dict(seed=0)
