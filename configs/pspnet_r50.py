# Table 8 baseline: PSPNet with mmseg's ResNetV1c-50-D8.
_base_ = './_base_/pspnet_resnet_cityscapes.py'
