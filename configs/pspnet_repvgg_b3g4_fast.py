_base_ = './_base_/pspnet_repvgg_cityscapes.py'
model = dict(
    backbone=dict(arch='B3g4', dilation='fast', init_cfg=dict(
        type='Pretrained', checkpoint='checkpoints/RepVGG-B3g4-train.pth')),
    decode_head=dict(in_channels=2560),
    auxiliary_head=dict(in_channels=768))
