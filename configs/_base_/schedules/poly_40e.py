# The paper's schedule (Sect. 4.3): SGD momentum 0.9, base LR 0.01, poly
# power 0.9, weight decay 1e-4, 40 epochs of the 2975 training images.
# Epoch-based, so the length is what the paper says whatever the batch: at
# the global batch 16, an epoch is ceil(2975 / 16) = 186 iterations and 40
# epochs are 40 x 186 = 7440 iterations (not mmseg's 80k-iteration copy).
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=1e-4),
    clip_grad=None)
# Poly decay applied every iteration (convert_to_iter_based) down to 0, as
# in the original PSPNet training code.
param_scheduler = [
    dict(type='PolyLR', power=0.9, eta_min=0.0, begin=0, end=40,
         by_epoch=True, convert_to_iter_based=True)
]
# Resumes mid-epoch at the next batch (repvgg_seg/training/loops.py); mmengine's
# EpochBasedTrainLoop would restart an interrupted epoch.
train_cfg = dict(type='ResumableEpochBasedTrainLoop', max_epochs=40,
                 val_interval=5)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
