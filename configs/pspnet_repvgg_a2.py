_base_ = './_base_/pspnet_repvgg_cityscapes.py'
model = dict(
    backbone=dict(arch='A2', dilation='last_two_stages', init_cfg=dict(
        type='Pretrained', checkpoint='checkpoints/RepVGG-A2-train.pth')),
    decode_head=dict(in_channels=1408),
    auxiliary_head=dict(in_channels=384))
