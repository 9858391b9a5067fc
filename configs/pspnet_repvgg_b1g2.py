_base_ = './_base_/pspnet_repvgg_cityscapes.py'
model = dict(
    backbone=dict(arch='B1g2', dilation='last_two_stages', init_cfg=dict(
        type='Pretrained', checkpoint='checkpoints/RepVGG-B1g2-train.pth')),
    decode_head=dict(in_channels=2048),
    auxiliary_head=dict(in_channels=512))
