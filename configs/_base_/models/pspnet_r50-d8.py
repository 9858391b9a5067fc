# mmseg's PSPNet-R50-D8 (ResNetV1c, dilation in the last two stages), the
# Table 8 baseline, with the same heads and test mode as the RepVGG configs.
_base_ = ['./pspnet_repvgg.py']
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    backbone=dict(
        _delete_=True,
        type='ResNetV1c',
        depth=50,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        dilations=(1, 1, 2, 4),
        strides=(1, 2, 1, 1),
        norm_cfg=norm_cfg,
        norm_eval=False,
        style='pytorch',
        contract_dilation=True,
        init_cfg=dict(type='Pretrained',
                      checkpoint='open-mmlab://resnet50_v1c')),
    decode_head=dict(in_channels=2048),
    auxiliary_head=dict(in_channels=1024))
