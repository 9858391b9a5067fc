# The Table 5 schedule: as the 120-epoch one (SGD momentum 0.9, LR 0.1 for a
# global batch of 256, weight decay 1e-4 on conv/linear kernels only), with a
# 5-epoch linear warm-up (from 0.001 x LR, per iteration) and then cosine
# annealing to 0 until epoch 200.
_base_ = './sgd_cosine_120e.py'

max_epochs = 200
warmup_epochs = 5
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, end_factor=1.0, by_epoch=True,
         begin=0, end=warmup_epochs, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - warmup_epochs,
         eta_min=0.0, by_epoch=True, begin=warmup_epochs, end=max_epochs,
         convert_to_iter_based=True)
]
# resumes mid-epoch at the next batch (repvgg_seg/training/loops.py)
train_cfg = dict(type='ResumableEpochBasedTrainLoop', max_epochs=max_epochs,
                 val_interval=1)
