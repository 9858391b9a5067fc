# RepVGG-B3 on ImageNet, the paper's 200-epoch recipe (Table 5): 5-epoch
# warm-up + cosine, AutoAugment, label smoothing 0.1, mixup 0.2, batch 32 x 8
# GPUs. Paper (Table 5): 80.52% top-1.
_base_ = './_base_/repvgg_200e.py'
model = dict(
    backbone=dict(arch='B3'),
    head=dict(in_channels=2560))  # stage-4 width int(512 * 5)
