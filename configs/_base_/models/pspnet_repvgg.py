# PSPNet with a RepVGG backbone (the paper's Sect. 4.3 / Table 8). Each
# experiment config sets the arch, the dilation mode, the heads' in_channels
# and the ImageNet checkpoint.
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='RepVGG',
        arch='B1g2',
        out_indices=(1, 2, 3, 4),  # stages at strides 4, 8, 8, 8 (dilated)
        dilation='last_two_stages',
        deploy=False,
        norm_cfg=norm_cfg,
        norm_eval=False,
        frozen_stages=-1,
        with_cp=False),
    decode_head=dict(
        type='PSPHead',
        in_channels=2048,
        in_index=3,  # stage 4, the last stage
        channels=512,
        pool_scales=(1, 2, 3, 6),
        dropout_ratio=0.1,
        num_classes=19,
        norm_cfg=norm_cfg,
        align_corners=True,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(
        type='FCNHead',
        in_channels=512,
        in_index=2,  # stage 3
        channels=256,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=19,
        norm_cfg=norm_cfg,
        align_corners=True,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)),
    train_cfg=dict(),
    # Sliding window of the training crop; stride 476 = 2/3 of 713, the same
    # ratio as mmseg's 769x769 PSPNet configs (stride 513).
    test_cfg=dict(mode='slide', crop_size=(713, 713), stride=(476, 476)))
