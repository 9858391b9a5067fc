# Everything of a Table 8 experiment with QARepVGG blocks (block='qarepvgg')
# in place of RepVGG's; the recipe is unchanged. Each experiment config sets
# the arch, the dilation mode, the heads' in_channels and the ImageNet
# checkpoint, which has to be the user's own: no official QARepVGG weights
# exist (pretrain with configs/imagenet/qarepvgg_<arch>_120e.py), and
# official RepVGG weights are refused by a QARepVGG backbone.
_base_ = './pspnet_repvgg_cityscapes.py'
model = dict(backbone=dict(block='qarepvgg'))
