"""The runs behind ``tools/train.py`` and ``tools/test.py``: a config file
and the command-line options turned into the config an mmengine Runner
executes (work dir, resume, AMP, data checks, fusing and engine hooks for
testing), and the Runner built and run."""
import os
import os.path as osp
from dataclasses import dataclass, replace
from typing import Optional, Sequence, Tuple

from mmengine.config import Config
from mmengine.dist import master_only
from mmengine.logging import print_log
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from .config import (check_work_dir, default_work_dir, load_config,
                     unwrap_dataset)
from .datasets.config_check import check_config_datasets
from .engines import ENGINES, EngineHook, get_engine  # noqa: F401 (hook)
from .errors import ConfigError, InputError, check_choice
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
    check_choice('data check mode', mode, DATA_CHECK_MODES, ConfigError)
    if mode == 'off':
        return
    rank = launch_rank(cfg.get('launcher', 'none'))
    if rank != 0:
        print_log(f'data check: rank 0 checks the data (this is rank {rank})',
                  logger='current')
        return
    check_config_datasets(cfg, splits, quick=mode == 'quick',
                          cache_dir=cfg.work_dir)


@dataclass
class RunnerOptions:
    """What every Runner run of a config takes from its command line.

    ``work_dir``: default the config's, else ``work_dirs/<config name>``;
    ``cfg_options``: config overrides; ``launcher``: mmengine's;
    ``trust_checkpoint``: fully unpickle checkpoints (this run only);
    ``data_check``: see :func:`check_data`.
    """
    work_dir: Optional[str] = None
    cfg_options: Optional[dict] = None
    launcher: str = 'none'
    trust_checkpoint: bool = False
    data_check: Optional[str] = None


@dataclass
class TrainOptions(RunnerOptions):
    """How ``tools/train.py`` trains (see its ``--help``). ``resume``:
    ``'auto'`` resumes from the latest checkpoint of the work dir, a path
    from that checkpoint, ``None`` starts afresh; ``amp``: mmengine's
    automatic mixed precision (GPU only)."""
    resume: Optional[str] = None
    amp: bool = False


def _runner_config(config: str, options: RunnerOptions) -> Config:
    """The config file with the options every Runner run takes: overrides,
    trust, launcher, a writable work dir."""
    cfg = load_config(config, options.cfg_options)
    if options.trust_checkpoint:
        cfg.trust_checkpoint = True
    cfg.launcher = options.launcher
    cfg.work_dir = (options.work_dir or cfg.get('work_dir')
                    or default_work_dir(config))
    check_work_dir(cfg.work_dir)
    return cfg


def _use_amp(cfg: Config) -> None:
    """mmengine's ``AmpOptimWrapper`` with a dynamic loss scale; refused
    where there is no GPU."""
    from mmengine.device import get_device
    if get_device() == 'cpu':
        raise ConfigError('--amp needs a GPU (mmengine\'s AmpOptimWrapper '
                          'trains on GPU/NPU/MLU only); this machine has '
                          'none, train without --amp')
    if cfg.optim_wrapper.get('type', 'OptimWrapper') != 'AmpOptimWrapper':
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'


def _use_resume(cfg: Config, resume: Optional[str]) -> None:
    """``resume='auto'``: the work dir's latest checkpoint, if any; a path:
    that checkpoint; ``None``: a fresh start."""
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


def setup_train_cfg(config: str, options: Optional[TrainOptions] = None,
                    **fields) -> Config:
    """The config ``tools/train.py`` runs: ``options`` (default
    :class:`TrainOptions`), with ``fields`` of it given by keyword
    overriding them; the train and val sets checked."""
    options = replace(options or TrainOptions(), **fields)
    cfg = _runner_config(config, options)
    if options.amp:
        _use_amp(cfg)
    _use_resume(cfg, options.resume)
    splits = ['train'] + (['val'] if cfg.get('val_dataloader') else [])
    check_data(cfg, splits, options.data_check)
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
    unwrap_dataset(cfg.test_dataloader.dataset).pipeline = cfg.tta_pipeline
    cfg.tta_model.module = cfg.model
    cfg.model = cfg.tta_model


@dataclass
class TestOptions(RunnerOptions):
    """How ``tools/test.py`` evaluates (see its ``--help``).

    ``engine``: where ``encode_decode`` runs (:mod:`repvgg_seg.engines`,
    through :class:`~repvgg_seg.engines.EngineHook`): ``torch``,
    ``fused`` (``fuse=True`` is the same), ``winograd``, ``onnxruntime``,
    ``openvino``, in ``precision`` (``streams``: OpenVINO infer requests).
    ``tta``: mmseg's test-time augmentation (the config's ``tta_model``
    and ``tta_pipeline``). ``show_dir``: write colourised predictions there.
    ``format_only``: write submission files (to ``out_dir``, default
    ``<work_dir>/format_results``) and no metrics.
    """
    __test__ = False  # a name pytest would otherwise collect as tests

    engine: str = 'torch'
    fuse: bool = False
    precision: str = 'fp32'
    streams: Optional[int] = None
    tta: bool = False
    show_dir: Optional[str] = None
    format_only: bool = False
    out_dir: Optional[str] = None


def _test_engine(checkpoint: str, options: TestOptions) -> Tuple[str, str]:
    """The engine (``fuse`` selects ``fused``) and the kind of weights
    ``checkpoint`` is for it (``'checkpoint'`` for PyTorch weights), both
    checked before anything is built."""
    engine = options.engine
    if options.fuse and engine == 'torch':
        engine = 'fused'
    eng = get_engine(engine)
    kind = eng.check_weights(checkpoint)
    eng.require()
    eng.require_precision(options.precision)
    why = eng.unsupported(options.precision)
    if why:
        raise InputError(why)
    if not osp.isfile(checkpoint):
        raise FileNotFoundError(f'checkpoint file not found: {checkpoint}')
    return engine, kind


def _test_runner(cfg: Config, checkpoint: Optional[str]) -> None:
    """The Runner of a test: :class:`TestRunner` (unless the config names
    another), ``checkpoint`` loaded (``None``: the engine brings its own
    weights), nothing of training."""
    if cfg.get('runner_type', 'Runner') in ('Runner', 'ResumableRunner'):
        cfg.runner_type = 'TestRunner'  # keeps the work dir's config
    cfg.load_from = checkpoint
    cfg.resume = False
    # A test builds nothing of training. mmseg's visualization hook reads
    # runner.iter, which would build the train loop and with it the train
    # data set (absent where only val/test data are kept).
    for key in ('train_dataloader', 'train_cfg', 'optim_wrapper',
                'param_scheduler'):
        cfg[key] = None


def _test_hooks(cfg: Config, checkpoint: str, kind: str, engine: str,
                options: TestOptions) -> None:
    """A test's own hooks in place of the config's: the strict checkpoint
    fit (for PyTorch weights) and the :class:`EngineHook` (for any engine
    or precision but torch fp32)."""
    hooks = [h for h in cfg.get('custom_hooks', [])
             if h.get('type') not in ('CheckpointFitHook', 'EngineHook')]
    if kind == 'checkpoint':
        # an evaluation must load every weight (training configs check
        # resumes only)
        hooks.append(dict(type='CheckpointFitHook', only_on_resume=False))
    if engine != 'torch' or options.precision != 'fp32':
        hooks.append(dict(type='EngineHook', engine=engine,
                          weights=osp.abspath(checkpoint),
                          precision=options.precision,
                          streams=options.streams))
    cfg.custom_hooks = hooks


def _use_show_dir(cfg: Config, show_dir: str) -> None:
    """mmseg's visualization hook draws every prediction into
    ``show_dir``."""
    vis = cfg.default_hooks.get('visualization')
    if vis is None:
        raise ConfigError('--show-dir needs a visualization hook in '
                          'default_hooks')
    vis.draw = True
    vis.interval = 1
    cfg.visualizer.save_dir = show_dir
    cfg.visualizer.vis_backends = [dict(type='LocalVisBackend')]


def _use_format_only(cfg: Config, out_dir: Optional[str]) -> None:
    """The evaluator writes submission files to ``out_dir`` (default
    ``<work_dir>/format_results``) instead of computing metrics."""
    cfg.test_evaluator.format_only = True
    cfg.test_evaluator.output_dir = out_dir or osp.join(cfg.work_dir,
                                                        'format_results')
    cfg.test_evaluator.keep_results = True


def setup_test_cfg(config: str, checkpoint: str,
                   options: Optional[TestOptions] = None,
                   **fields) -> Config:
    """The config ``tools/test.py`` runs (mIoU via mmseg's IoUMetric):
    ``options`` (default :class:`TestOptions`), with ``fields`` of it given
    by keyword overriding them.

    ``checkpoint`` is whatever the engine takes: a PyTorch checkpoint
    (loaded by the Runner, strictly), an ``.onnx`` file or an OpenVINO IR
    (``.xml``, fp32 or INT8, e.g. from ``tools/quantize.py``), which
    replaces the network (no PyTorch checkpoint is loaded).
    """
    options = replace(options or TestOptions(), **fields)
    engine, kind = _test_engine(checkpoint, options)
    cfg = _runner_config(config, options)
    _test_runner(cfg, checkpoint if kind == 'checkpoint' else None)
    _test_hooks(cfg, checkpoint, kind, engine, options)
    if options.tta:
        _use_tta(cfg)
    if options.show_dir:
        _use_show_dir(cfg, options.show_dir)
    if options.format_only:
        _use_format_only(cfg, options.out_dir)
    else:  # a benchmark's test split may have no labels
        check_data(cfg, ['test'], options.data_check)
    return cfg
