# The RepVGG 120-epoch recipe (Table 4: simple augmentation, SGD LR 0.1
# cosine, batch 32 x 8 GPUs) with QARepVGG blocks (block='qarepvgg'; Chu et
# al., "Make RepVGG Greater Again"). The QARepVGG repository publishes no
# ImageNet weights, so these configs are how QA checkpoints are made; the
# segmentation configs (configs/pspnet_qarepvgg_*.py) expect the best one at
# checkpoints/QARepVGG-<arch>-train.pth (docs/backbone.md).
_base_ = './repvgg_120e.py'
model = dict(backbone=dict(block='qarepvgg'))
