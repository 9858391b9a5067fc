_base_ = './_base_/pspnet_repvgg_cityscapes.py'
model = dict(
    backbone=dict(arch='B0', dilation='last_two_stages', init_cfg=dict(
        type='Pretrained', checkpoint='checkpoints/RepVGG-B0-train.pth')),
    decode_head=dict(in_channels=1280),
    auxiliary_head=dict(in_channels=256))
