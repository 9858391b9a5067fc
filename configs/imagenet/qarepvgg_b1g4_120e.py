# QARepVGG-B1g4 on ImageNet: the RepVGG 120-epoch recipe with QARepVGG
# blocks (see _base_/qarepvgg_120e.py). No official weights or published
# top-1 for this recipe; train with tools/train.py and copy the best
# checkpoint to checkpoints/QARepVGG-B1g4-train.pth for segmentation.
_base_ = './_base_/qarepvgg_120e.py'
model = dict(
    backbone=dict(arch='B1g4'),
    head=dict(in_channels=2048))  # stage-4 width int(512 * 4)
