_base_ = './_base_/pspnet_repvgg_cityscapes.py'
model = dict(
    backbone=dict(arch='B2g4', dilation='last_two_stages', init_cfg=dict(
        type='Pretrained', checkpoint='checkpoints/RepVGG-B2g4-train.pth')),
    decode_head=dict(in_channels=2560),
    auxiliary_head=dict(in_channels=640))
