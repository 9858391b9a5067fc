# Runtime of the ImageNet classification configs: mmpretrain's registries by
# default (see models/repvgg_cls.py for how the backbone comes from this
# project), the project's modules and safe checkpoint loader imported.
custom_imports = dict(imports=['repvgg_seg'], allow_failed_imports=False)
default_scope = 'mmpretrain'
# mmengine's Runner with every rank's random state in checkpoints and data
# workers that leave SIGTERM/SIGINT to the main process (repvgg_seg/training)
runner_type = 'ResumableRunner'

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=100),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # keeps the best top-1 checkpoint and the latest three
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3,
                    save_best='accuracy/top1', rule='greater'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='VisualizationHook', enable=False))

env_cfg = dict(
    cudnn_benchmark=True,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))

vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='UniversalVisualizer', vis_backends=vis_backends)

# Crash-safe training, as for segmentation (repvgg_seg/training/hooks.py;
# the hooks sit in mmengine's root registry, so this mmpretrain scope finds
# them).
custom_hooks = [
    dict(type='RandomStateHook'),
    dict(type='SignalCheckpointHook'),
    dict(type='FiniteLossHook'),
    dict(type='CheckpointFitHook'),
]

log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=None, deterministic=False)
# Full unpickling of checkpoints is refused unless set (README "Reliability
# and security"); tools' --trust-checkpoint sets it too.
trust_checkpoint = False
