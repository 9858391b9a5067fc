"""Config loading and mmengine Runner set-up shared by the tools.

The tools under ``tools/`` are thin argument parsers over these functions, so
tests and notebooks can do exactly what the command lines do.
"""
import os
import os.path as osp
from typing import Optional, Sequence

from mmengine.config import Config, DictAction  # noqa: F401 (re-export)
from mmengine.logging import print_log
from mmengine.runner import Runner

from .checkpoint import set_trust_checkpoints


class ConfigError(ValueError):
    """A config file that is missing or cannot be used."""


def load_config(path: str, cfg_options: Optional[dict] = None) -> Config:
    """Read a config file and apply ``--cfg-options`` overrides."""
    if not osp.isfile(path):
        raise ConfigError(f'config file not found: {path}')
    try:
        cfg = Config.fromfile(path)
    except Exception as exc:
        raise ConfigError(f'cannot read config {path}: {exc}') from None
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if cfg.get('trust_checkpoint', False):
        set_trust_checkpoints(True)
    return cfg


def default_work_dir(config_path: str) -> str:
    """``work_dirs/<config name>``, mmseg's convention."""
    return osp.join('work_dirs', osp.splitext(osp.basename(config_path))[0])


def check_work_dir(work_dir: str) -> None:
    """Fail early, before any training, when outputs cannot be written."""
    try:
        os.makedirs(work_dir, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f'cannot create work dir {work_dir}: {exc.strerror}') from None
    if not os.access(work_dir, os.W_OK):
        raise ConfigError(f'work dir {work_dir} is not writable')


DATA_CHECK_MODES = ('full', 'quick', 'off')


def check_data(cfg: Config, splits: Sequence[str],
               mode: Optional[str] = None) -> None:
    """Check the config's segmentation data sets before the Runner is
    built (see :mod:`repvgg_seg.datasets.config_check`).

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
    from .datasets.config_check import check_config_datasets
    check_config_datasets(cfg, splits, quick=mode == 'quick',
                          cache_dir=cfg.work_dir)


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
    if trust_checkpoint:
        set_trust_checkpoints(True)
    cfg = load_config(config, cfg_options)
    cfg.launcher = launcher
    cfg.work_dir = work_dir or cfg.get('work_dir') or default_work_dir(config)
    check_work_dir(cfg.work_dir)
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
        from .engine import find_resume_checkpoint
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


def build_runner(cfg: Config) -> Runner:
    if 'runner_type' in cfg:
        from mmengine.registry import RUNNERS
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


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
                   engine: str = 'torch') -> Config:
    """The config ``tools/test.py`` runs (mIoU via mmseg's IoUMetric).

    ``engine='winograd'`` evaluates the fused model on the opt-in Winograd
    engine (:class:`repvgg_seg.hooks.WinogradEngineHook`; implies ``fuse``).
    """
    if engine not in ('torch', 'winograd'):
        raise ValueError(f"unknown engine {engine!r}; valid: 'torch', "
                         "'winograd'")
    if engine == 'winograd':
        from .winograd import CACHE_ENV, nnpack_available
        if not nnpack_available():
            raise ValueError('--engine winograd needs NNPACK, which this '
                             'PyTorch build lacks')
    if trust_checkpoint:
        set_trust_checkpoints(True)
    if not osp.isfile(checkpoint):
        raise FileNotFoundError(f'checkpoint file not found: {checkpoint}')
    cfg = load_config(config, cfg_options)
    cfg.launcher = launcher
    cfg.work_dir = work_dir or cfg.get('work_dir') or default_work_dir(config)
    check_work_dir(cfg.work_dir)
    cfg.load_from = checkpoint
    cfg.resume = False
    # an evaluation must load every weight (training configs check resumes)
    hooks = [h for h in cfg.get('custom_hooks', [])
             if h.get('type') != 'CheckpointFitHook']
    cfg.custom_hooks = hooks + [dict(type='CheckpointFitHook',
                                     only_on_resume=False)]
    if engine == 'winograd':
        cfg.custom_hooks = list(cfg.custom_hooks) + [dict(
            type='WinogradEngineHook',
            cache_file=os.environ.get(CACHE_ENV) or None)]
    elif fuse:
        cfg.custom_hooks = list(cfg.custom_hooks) + [
            dict(type='FuseModelHook')]
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


def parse_cfg_options(pairs: Optional[Sequence[str]]) -> dict:
    """``k=v`` strings (as ``--cfg-options`` gives them) to a dict."""
    import argparse
    namespace = argparse.Namespace()
    DictAction(option_strings=[], dest='opts')(None, namespace, list(pairs or
                                                                   []))
    return namespace.opts


def log_to_stderr() -> None:
    """Send the default mmengine logger's lines to stderr.

    mmengine logs to stdout; the tools print their results there (tables,
    JSON), which must stay clean for ``> file``. A Runner builds its own
    logger (its training log keeps going to stdout, as in mmseg)."""
    import logging
    import sys
    from mmengine.logging import MMLogger
    for handler in MMLogger.get_current_instance().handlers:
        if type(handler) is logging.StreamHandler:
            # not setStream(): it flushes the old stream, maybe closed
            handler.stream = sys.stderr


def run_cli(main, argv=None) -> int:
    """Run a tool's ``main``; expected errors print one clear line, not a
    traceback (set REPVGG_SEG_DEBUG=1 for the traceback)."""
    import sys
    from .checkpoint import CheckpointError
    from .engine import NonFiniteLossError
    log_to_stderr()
    try:
        return main(argv) or 0
    # TypeError: mostly a typo'd config key (an unexpected keyword argument
    # of the class being built, named by mmengine's registry).
    except (ConfigError, CheckpointError, NonFiniteLossError, OSError,
            KeyError, ValueError, TypeError) as exc:
        if os.environ.get('REPVGG_SEG_DEBUG') == '1':
            raise
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args \
            else str(exc)
        if isinstance(exc, OSError) and exc.errno is not None \
                and exc.filename is None and exc.strerror:
            message = exc.strerror  # ours already say it all: no [Errno N]
        # a command line's error report goes to stderr, not to the logger
        sys.stderr.write(f'error: {message}\n(set REPVGG_SEG_DEBUG=1 to see '
                         'the traceback)\n')
        return 2


def add_config_args(parser, checkpoints: bool = True) -> None:
    """``--cfg-options``, and ``--trust-checkpoint`` for the tools that read
    checkpoints (see :func:`parse_tool_args`)."""
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. '
                        'model.backbone.init_cfg=None')
    if checkpoints:
        parser.add_argument('--trust-checkpoint', action='store_true',
                            help='DANGEROUS: fully unpickle checkpoints '
                            '(only for files from a source you trust)')


def parse_tool_args(parser, argv=None):
    """Parse; ``--trust-checkpoint`` takes effect here, for every
    checkpoint the tool reads."""
    args = parser.parse_args(argv)
    if getattr(args, 'trust_checkpoint', False):
        set_trust_checkpoints(True)
    return args


def add_runner_args(parser) -> None:
    """The arguments every Runner-based tool shares (mmseg's conventions)."""
    add_config_args(parser)
    parser.add_argument('--launcher', default='none',
                        choices=['none', 'pytorch', 'slurm', 'mpi'])
    parser.add_argument('--data-check', choices=DATA_CHECK_MODES,
                        help='check the data sets before starting: full '
                        '(default; a pass is remembered in the work dir), '
                        'quick (pairing and file headers) or off')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def parse_runner_args(parser, argv=None):
    """Parse, and export LOCAL_RANK for torch.distributed launchers."""
    args = parse_tool_args(parser, argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args
