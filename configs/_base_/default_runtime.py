# Runtime shared by every segmentation config (mmseg 1.x defaults, with the
# project's modules and safe checkpoint loader imported).
custom_imports = dict(imports=['repvgg_seg'], allow_failed_imports=False)
default_scope = 'mmseg'
# mmengine's Runner with every rank's random state in checkpoints and data
# workers that leave SIGTERM/SIGINT to the main process (repvgg_seg/training)
runner_type = 'ResumableRunner'
env_cfg = dict(
    cudnn_benchmark=True,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(
    type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
# Full unpickling of checkpoints is refused unless set (see README
# "Reliability and security"); tools' --trust-checkpoint sets it too.
trust_checkpoint = False
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=True, interval=5,
                    max_keep_ckpts=3, save_last=True),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
# Crash-safe training (repvgg_seg/training/hooks.py): RNG state in checkpoints for
# exact resumes, a checkpoint on SIGTERM/SIGINT, a stop on NaN/inf loss, no
# resume from a checkpoint that does not fit the model.
custom_hooks = [
    dict(type='RandomStateHook'),
    dict(type='SignalCheckpointHook'),
    dict(type='FiniteLossHook'),
    dict(type='CheckpointFitHook'),
]
# tools/test.py --tta: mmseg's test-time augmentation (averaged softmaxes of
# the views of the data set's tta_pipeline)
tta_model = dict(type='SegTTAModel')
