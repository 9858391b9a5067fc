"""Command-line plumbing shared by the scripts in ``tools/``: the common
arguments, how ``--trust-checkpoint`` reaches the config, where log lines
go, and how errors are reported.

The tools are thin argument parsers over library functions, so tests and
notebooks can do exactly what the command lines do.
"""
import argparse
import logging
import os
import sys
from typing import Optional

from mmengine.config import DictAction
from mmengine.logging import MMLogger

from .errors import RepVGGSegError
from .runs import DATA_CHECK_MODES

DEBUG_ENV = 'REPVGG_SEG_DEBUG'
#: the checkpoint argument that means "no checkpoint: random weights"
NO_CHECKPOINT = 'none'


def log_to_stderr() -> None:
    """Send the default mmengine logger's lines to stderr.

    mmengine logs to stdout; the tools print their results there (tables,
    JSON), which must stay clean for ``> file``. A Runner builds its own
    logger (its training log keeps going to stdout, as in mmseg)."""
    for handler in MMLogger.get_current_instance().handlers:
        if type(handler) is logging.StreamHandler:
            # not setStream(): it flushes the old stream, maybe closed
            handler.stream = sys.stderr


def run_cli(main, argv=None) -> int:
    """Run a tool's ``main``.

    The errors a user causes and can fix (the project's
    :class:`~repvgg_seg.errors.RepVGGSegError` types, and operating-system
    errors such as a missing file or a full disk) print one ``error:`` line
    on stderr and return 2. Anything else is a bug and keeps its traceback.
    ``REPVGG_SEG_DEBUG=1`` shows the traceback of every error.
    """
    log_to_stderr()
    try:
        return main(argv) or 0
    except (RepVGGSegError, OSError) as exc:
        if os.environ.get(DEBUG_ENV) == '1':
            raise
        message = str(exc)
        if isinstance(exc, OSError) and exc.errno is not None \
                and exc.filename is None and exc.strerror:
            message = exc.strerror  # ours already say it all: no [Errno N]
        # a command line's error report goes to stderr, not to the logger
        sys.stderr.write(f'error: {message}\n(set {DEBUG_ENV}=1 to see the '
                         'traceback)\n')
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


def checkpoint_or_none(value: str) -> Optional[str]:
    """A checkpoint argument: ``None`` (random weights) for 'none', in any
    case; a path otherwise."""
    return None if value.lower() == NO_CHECKPOINT else value


def _checkpoint_file(value: str) -> str:
    if checkpoint_or_none(value) is None:
        raise argparse.ArgumentTypeError(
            f"'{value}' (random weights) does not apply here: this tool "
            'needs trained weights')
    return value


def add_checkpoint_arg(parser, help: str = 'the checkpoint',
                       random_weights: bool = True) -> None:
    """The positional ``checkpoint`` of the tools that take one, with one
    convention: 'none' means random weights, for the tools that only run a
    model (speed, export and structure checks); the others refuse it."""
    if random_weights:
        parser.add_argument('checkpoint', type=checkpoint_or_none,
                            help=f"{help}, or '{NO_CHECKPOINT}' for random "
                            'weights')
    else:
        parser.add_argument('checkpoint', type=_checkpoint_file,
                            help=f"{help} (not '{NO_CHECKPOINT}': there "
                            'are no random weights to convert)')


def parse_tool_args(parser, argv=None):
    """Parse. ``--trust-checkpoint`` becomes the config entry
    ``trust_checkpoint=True`` in ``args.cfg_options``, which every load of
    this command (and nothing after it) honours."""
    args = parser.parse_args(argv)
    if getattr(args, 'trust_checkpoint', False):
        args.cfg_options = dict(args.cfg_options or {}, trust_checkpoint=True)
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
