"""The runs behind ``tools/train.py`` and ``tools/test.py``: a config file
and the command-line options turned into the config an mmengine Runner
executes (work dir, resume, AMP, data checks, fusing and engine hooks for
testing), and the Runner built and run."""
import os
import os.path as osp
from typing import Optional, Sequence

from mmengine.config import Config
from mmengine.dist import master_only
from mmengine.logging import print_log
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from .config import check_work_dir, default_work_dir, load_config
from .datasets.config_check import check_config_datasets
from .engines import ENGINES, EngineHook, get_engine  # noqa: F401 (hook)
from .errors import ConfigError, InputError
from .io.checkpoint import trusted_checkpoints
from .training.state import find_resume_checkpoint

#: the engines ``tools/test.py`` evaluates on
TEST_ENGINES = tuple(ENGINES)

DATA_CHECK_MODES = ('full', 'quick', 'off')


# Where each of mmengine's launchers reads the global rank from.
_RANK_VARIABLES = {'pytorch': 'RANK', 'slurm': 'SLURM_PROCID',
                   'mpi': 'OMPI_COMM_WORLD_RANK'}


def launch_rank(launcher: str) -> int:
    """This process's global rank in a launch by mmengine's ``launcher``
    (``'pytorch'``: torchrun's ``RANK``; ``'slurm'``: srun's
    ``SLURM_PROCID``; ``'mpi'``), read from the environment because the
    Runner makes the process group later; 0 for ``'none'``: a process on
    its own, whatever the environment says."""
    name = _RANK_VARIABLES.get(launcher)
    return int(os.environ.get(name) or 0) if name else 0


def check_data(cfg: Config, splits: Sequence[str],
               mode: Optional[str] = None) -> None:
    """Check the config's segmentation data sets before the Runner is
    built (see :mod:`repvgg_seg.datasets.config_check`), once per job: on
    rank 0 of the config's ``launcher`` (:func:`launch_rank`). The other
    ranks go on to build their Runners and wait for rank 0 in the process
    group; if rank 0 finds a problem it exits non-zero and torchrun (or
    srun ``--kill-on-bad-exit``, as tools/slurm_train.sh runs it) ends
    them. Processes without a launcher each check.

    Args:
        mode: ``'full'`` (decode every file; a passed check is remembered
            in the work dir), ``'quick'`` (pairing and headers) or
            ``'off'``; ``None``: the config's ``data_check``, else full.
    """
    mode = mode or cfg.get('data_check', 'full')
    if mode not in DATA_CHECK_MODES:
        raise ConfigError(f'invalid data check mode {mode!r}; valid modes: '
                          + ', '.join(DATA_CHECK_MODES))
    if mode == 'off':
        return
    rank = launch_rank(cfg.get('launcher', 'none'))
    if rank != 0:
        print_log(f'data check: rank 0 checks the data (this is rank {rank})',
                  logger='current')
        return
    check_config_datasets(cfg, splits, quick=mode == 'quick',
                          cache_dir=cfg.work_dir)


def _runner_config(config: str, cfg_options: Optional[dict],
                   work_dir: Optional[str], launcher: str,
                   trust_checkpoint: bool) -> Config:
    """The config file with the options every Runner run takes: overrides,
    trust, launcher, a writable work dir."""
    cfg = load_config(config, cfg_options)
    if trust_checkpoint:
        cfg.trust_checkpoint = True
    cfg.launcher = launcher
    cfg.work_dir = work_dir or cfg.get('work_dir') or default_work_dir(config)
    check_work_dir(cfg.work_dir)
    return cfg


def setup_train_cfg(config: str,
                    work_dir: Optional[str] = None,
                    resume: Optional[str] = None,
                    amp: bool = False,
                    cfg_options: Optional[dict] = None,
                    launcher: str = 'none',
                    trust_checkpoint: bool = False,
                    data_check: Optional[str] = None) -> Config:
    """The config ``tools/train.py`` runs.

    Args:
        resume: ``'auto'`` resumes from the latest checkpoint of the work dir,
            a path resumes from that checkpoint, ``None`` starts afresh.
        data_check: see :func:`check_data` (train and val sets).
    """
    cfg = _runner_config(config, cfg_options, work_dir, launcher,
                         trust_checkpoint)
    if amp:
        from mmengine.device import get_device
        if get_device() == 'cpu':
            raise ConfigError('--amp needs a GPU (mmengine\'s AmpOptimWrapper '
                              'trains on GPU/NPU/MLU only); this machine has '
                              'none, train without --amp')
        if cfg.optim_wrapper.get('type', 'OptimWrapper') != 'AmpOptimWrapper':
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'
    if resume == 'auto':
        cfg.load_from = find_resume_checkpoint(cfg.work_dir)
        cfg.resume = cfg.load_from is not None
        if not cfg.resume:
            print_log(f'--resume: no checkpoint in {cfg.work_dir}; starting '
                      'from the beginning', logger='current', level=30)
    elif resume is not None:
        if not osp.isfile(resume):
            raise FileNotFoundError(
                f'checkpoint file not found: {resume}')
        cfg.resume = True
        cfg.load_from = resume
    splits = ['train'] + (['val'] if cfg.get('val_dataloader') else [])
    check_data(cfg, splits, data_check)
    return cfg


@RUNNERS.register_module()
class TestRunner(Runner):
    """mmengine's Runner for ``tools/test.py``. mmengine dumps the config it
    runs into the work dir, under the config's file name: a test run in a
    training work dir would replace the config that trained the model (the
    one users pass to every tool) with the test's (no train pieces). This
    one dumps it into the run's timestamped log folder instead."""

    @master_only
    def dump_config(self) -> None:
        name = (osp.basename(self.cfg.filename) if self.cfg.filename
                else f'{self.timestamp}.py')
        self.cfg.dump(osp.join(self.log_dir, name))


def build_runner(cfg: Config) -> Runner:
    """The config's Runner (``runner_type`` or mmengine's). Building it
    builds the model, data sets and hooks from the config, so a ``KeyError``
    or ``TypeError`` here is a config mistake (an unknown type, a misspelt
    argument, named by mmengine's registry): reported as a
    :class:`ConfigError`. Errors later, while training, are not caught."""
    try:
        if 'runner_type' in cfg:
            return RUNNERS.build(cfg)
        return Runner.from_cfg(cfg)
    except (KeyError, TypeError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args \
            else str(exc)
        raise ConfigError(f'cannot build from {cfg.filename}: '
                          f'{message}') from exc


def _cpu_distributed(cfg: Config) -> None:
    """A ``--launcher pytorch`` run on a machine without a GPU: mmengine's
    ``init_dist`` calls ``torch.cuda.set_device`` and its DDP wrapper
    passes ``device_ids``, which fail there. So the process group is made
    here, with gloo (torchrun's environment), and DDP wraps the model with
    ``device_ids=None``, as PyTorch does for CPU modules; mmengine then
    uses the group as it finds it."""
    import torch
    import torch.distributed as dist
    if cfg.get('launcher', 'none') != 'pytorch' or torch.cuda.is_available():
        return
    if not dist.is_initialized():
        dist.init_process_group('gloo')
    wrapper = cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel', broadcast_buffers=False)
    wrapper.setdefault('device_ids', None)
    cfg.model_wrapper_cfg = wrapper


def run_train(cfg: Config):
    """Build the Runner and train, trusting checkpoints fully only if the
    config says so (``trust_checkpoint``), and only for this run."""
    _cpu_distributed(cfg)
    with trusted_checkpoints(bool(cfg.get('trust_checkpoint', False))):
        return build_runner(cfg).train()


def run_test(cfg: Config) -> dict:
    """Build the Runner and test (see :func:`run_train` for the trust);
    returns the metrics."""
    _cpu_distributed(cfg)
    with trusted_checkpoints(bool(cfg.get('trust_checkpoint', False))):
        return build_runner(cfg).test()


def _use_tta(cfg: Config) -> None:
    """mmseg's ``tools/test.py --tta``: the test set runs the config's
    ``tta_pipeline`` and the model is wrapped in its ``tta_model``
    (``SegTTAModel``: the softmaxes of the augmented views averaged)."""
    missing = [k for k in ('tta_model', 'tta_pipeline') if not cfg.get(k)]
    if missing:
        raise ConfigError(f'--tta needs {" and ".join(missing)} in '
                          f'{cfg.filename} (see configs/_base_/'
                          'default_runtime.py and configs/_base_/datasets/)')
    dataset = cfg.test_dataloader.dataset
    while 'pipeline' not in dataset and 'dataset' in dataset:
        dataset = dataset.dataset
    dataset.pipeline = cfg.tta_pipeline
    cfg.tta_model.module = cfg.model
    cfg.model = cfg.tta_model


def setup_test_cfg(config: str,
                   checkpoint: str,
                   work_dir: Optional[str] = None,
                   fuse: bool = False,
                   show_dir: Optional[str] = None,
                   format_only: bool = False,
                   out_dir: Optional[str] = None,
                   cfg_options: Optional[dict] = None,
                   launcher: str = 'none',
                   trust_checkpoint: bool = False,
                   data_check: Optional[str] = None,
                   engine: str = 'torch',
                   precision: str = 'fp32',
                   streams: Optional[int] = None,
                   tta: bool = False) -> Config:
    """The config ``tools/test.py`` runs (mIoU via mmseg's IoUMetric).

    ``engine``: where ``encode_decode`` runs (:mod:`repvgg_seg.engines`,
    through :class:`~repvgg_seg.engines.EngineHook`): ``torch``,
    ``fused`` (``fuse=True`` is the same), ``winograd``, ``onnxruntime``,
    ``openvino``. ``checkpoint`` is whatever the engine takes: a PyTorch
    checkpoint (loaded by the Runner, strictly), an ``.onnx`` file or an
    OpenVINO IR (``.xml``, fp32 or INT8, e.g. from ``tools/quantize.py``),
    which replaces the network (no PyTorch checkpoint is loaded).
    ``tta``: mmseg's test-time augmentation (the config's ``tta_model`` and
    ``tta_pipeline``).
    """
    if fuse and engine == 'torch':
        engine = 'fused'
    eng = get_engine(engine)
    kind = eng.check_weights(checkpoint)
    eng.require()
    eng.require_precision(precision)
    why = eng.unsupported(precision)
    if why:
        raise InputError(why)
    if not osp.isfile(checkpoint):
        raise FileNotFoundError(f'checkpoint file not found: {checkpoint}')
    cfg = _runner_config(config, cfg_options, work_dir, launcher,
                         trust_checkpoint)
    if cfg.get('runner_type', 'Runner') in ('Runner', 'ResumableRunner'):
        cfg.runner_type = 'TestRunner'  # keeps the work dir's config
    cfg.load_from = checkpoint if kind == 'checkpoint' else None
    cfg.resume = False
    # A test builds nothing of training. mmseg's visualization hook reads
    # runner.iter, which would build the train loop and with it the train
    # data set (absent where only val/test data are kept).
    for key in ('train_dataloader', 'train_cfg', 'optim_wrapper',
                'param_scheduler'):
        cfg[key] = None
    hooks = [h for h in cfg.get('custom_hooks', [])
             if h.get('type') not in ('CheckpointFitHook', 'EngineHook')]
    if kind == 'checkpoint':
        # an evaluation must load every weight (training configs check
        # resumes only)
        hooks.append(dict(type='CheckpointFitHook', only_on_resume=False))
    if engine != 'torch' or precision != 'fp32':
        hooks.append(dict(type='EngineHook', engine=engine,
                          weights=osp.abspath(checkpoint),
                          precision=precision, streams=streams))
    cfg.custom_hooks = hooks
    if tta:
        _use_tta(cfg)
    if show_dir:
        vis = cfg.default_hooks.get('visualization')
        if vis is None:
            raise ConfigError('--show-dir needs a visualization hook in '
                              'default_hooks')
        vis.draw = True
        vis.interval = 1
        cfg.visualizer.save_dir = show_dir
        cfg.visualizer.vis_backends = [dict(type='LocalVisBackend')]
    if format_only:
        cfg.test_evaluator.format_only = True
        cfg.test_evaluator.output_dir = out_dir or osp.join(
            cfg.work_dir, 'format_results')
        cfg.test_evaluator.keep_results = True
    if not format_only:  # a benchmark's test split may have no labels
        check_data(cfg, ['test'], data_check)
    return cfg
