# Table 8 baseline: PSPNet with mmseg's ResNetV1c-101-D8.
_base_ = './_base_/pspnet_resnet_cityscapes.py'
model = dict(backbone=dict(depth=101, init_cfg=dict(
    checkpoint='open-mmlab://resnet101_v1c')))
