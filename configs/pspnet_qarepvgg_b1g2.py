# PSPNet with a QARepVGG-B1g2 backbone (last_two_stages), the Table 8
# recipe. The checkpoint is your own ImageNet pretraining: configs/imagenet/
# qarepvgg_b1g2_120e.py, best checkpoint copied to the path below (no official
# QARepVGG weights exist). From scratch: --cfg-options
# model.backbone.init_cfg=None
_base_ = './_base_/pspnet_qarepvgg_cityscapes.py'
model = dict(
    backbone=dict(arch='B1g2', dilation='last_two_stages', init_cfg=dict(
        type='Pretrained', checkpoint='checkpoints/QARepVGG-B1g2-train.pth')),
    decode_head=dict(in_channels=2048),
    auxiliary_head=dict(in_channels=512))
