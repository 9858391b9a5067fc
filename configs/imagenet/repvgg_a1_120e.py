# RepVGG-A1 on ImageNet, the paper's 120-epoch recipe (Table 4): simple
# augmentation, SGD LR 0.1 cosine, batch 32 x 8 GPUs.
# Paper (Table 4): 74.46% top-1.
_base_ = './_base_/repvgg_120e.py'
model = dict(
    backbone=dict(arch='A1'),
    head=dict(in_channels=1280))  # stage-4 width int(512 * 2.5)
