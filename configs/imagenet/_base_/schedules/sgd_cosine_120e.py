# The Table 4 schedule: SGD, momentum 0.9, LR 0.1 (global batch 256), cosine
# annealing to 0 over 120 epochs, updated every iteration as the official
# code's CosineAnnealingLR (T_max in iterations), no warm-up.
#
# Weight decay 1e-4 on the kernels of conv and fully-connected layers only
# (paper, Sect. 4.1): norm_decay_mult=0 exempts every BN layer's weight and
# bias (mmengine's DefaultOptimWrapperConstructor recognises them by type,
# _BatchNorm, so BN and SyncBN alike, including the identity-branch BNs
# rbr_identity, which are bare BN layers), bias_decay_mult=0 the remaining
# biases (the linear head's; the fused rbr_reparam convs' if one ever trains
# a deploy model). The official script exempts keys containing 'bias' or 'bn'
# (its identity BN's weight, 'rbr_identity.weight', slips through that name
# test; here it is exempt, as the paper states). Its 2x LR on biases ("made
# no difference", says its comment) is not reproduced.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4,
                   nesterov=False),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0))

max_epochs = 120
param_scheduler = [
    dict(type='CosineAnnealingLR', T_max=max_epochs, eta_min=0.0,
         by_epoch=True, begin=0, end=max_epochs, convert_to_iter_based=True)
]
# resumes mid-epoch at the next batch (repvgg_seg/training/loops.py)
train_cfg = dict(type='ResumableEpochBasedTrainLoop', max_epochs=max_epochs,
                 val_interval=1)
val_cfg = dict()
test_cfg = dict()

# The LR above is for a global batch of 256; --cfg-options
# auto_scale_lr.enable=True scales it linearly to the actual global batch.
auto_scale_lr = dict(base_batch_size=256, enable=False)
