# PSPNet with a QARepVGG-B2 backbone (fast), the Table 8 recipe. The
# checkpoint is your own ImageNet pretraining: configs/imagenet/
# qarepvgg_b2_120e.py, best checkpoint copied to the path below (no official
# QARepVGG weights exist). From scratch: --cfg-options
# model.backbone.init_cfg=None
_base_ = './_base_/pspnet_qarepvgg_cityscapes.py'
model = dict(
    backbone=dict(arch='B2', dilation='fast', init_cfg=dict(
        type='Pretrained', checkpoint='checkpoints/QARepVGG-B2-train.pth')),
    decode_head=dict(in_channels=2560),
    auxiliary_head=dict(in_channels=640))
