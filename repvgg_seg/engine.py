"""Crash-safe training: atomic checkpoint files, a checkpoint on SIGTERM /
SIGINT, exact random state on resume, and a stop on a non-finite loss.

mmengine provides the Runner, the CheckpointHook and ``--resume``; these
pieces close the gaps that matter for multi-day runs on pre-emptible
machines:

* :class:`AtomicLocalBackend` replaces mmengine's local file backend, so every
  checkpoint is written to a temporary file and renamed: a crash mid-write
  never leaves a corrupt ``iter_N.pth`` (the previous ones stay intact).
* :class:`SignalCheckpointHook` saves a checkpoint at the end of the current
  iteration when the process gets SIGTERM (what Slurm sends before
  pre-emption) or SIGINT, then exits.
* :class:`RandomStateHook` stores the torch / numpy / python RNG states in
  every checkpoint and restores them on resume, so that a resumed run draws
  the same dropout masks and augmentations as an uninterrupted one.
* :class:`FiniteLossHook` stops training on a NaN/inf loss with a message
  naming the iteration, before a bad state can be saved.
"""
import errno
import os
import os.path as osp
import random
import signal
import tempfile

import numpy as np
import torch
from mmengine.dist import is_main_process
from mmengine.fileio.backends import LocalBackend, register_backend
from mmengine.hooks import Hook
from mmengine.logging import print_log

from mmseg.registry import HOOKS


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


def atomic_write_bytes(data: bytes, path: str) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename.

    On failure (disk full, no permission) the temporary file is removed,
    ``path`` keeps its previous content, and the error names the file.
    """
    path = os.fspath(path)
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{osp.basename(path)}.',
                               suffix='.partial', dir=folder)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if osp.exists(tmp):
            os.remove(tmp)
        reason = ('the disk is full' if exc.errno == errno.ENOSPC
                  else exc.strerror or str(exc))
        raise OSError(exc.errno, f'could not write {path}: {reason}; '
                      'earlier files are untouched') from None


class AtomicLocalBackend(LocalBackend):
    """mmengine's local backend with atomic ``put`` / ``put_text``."""

    def put(self, obj: bytes, filepath) -> None:
        atomic_write_bytes(obj, filepath)

    def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
        atomic_write_bytes(obj.encode(encoding), filepath)


def register_atomic_backend() -> None:
    register_backend('local', AtomicLocalBackend, force=True, prefixes='')


@HOOKS.register_module()
class RandomStateHook(Hook):
    """Save the RNG states with each checkpoint and restore them on resume.

    mmengine re-seeds a resumed run from the start, so without this the
    dropout masks (main process) would differ from an uninterrupted run.
    Data-loader workers re-seed themselves and replay the skipped batches,
    which reproduces their random state; with ``num_workers=0`` the
    augmentations share the main process's state and are not reproduced.
    """

    priority = 'VERY_HIGH'

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint.setdefault('meta', {})['rng_state'] = dict(
            torch=torch.get_rng_state(),
            numpy=np.random.get_state(),
            python=random.getstate(),
            cuda=(torch.cuda.get_rng_state_all()
                  if torch.cuda.is_available() else []))

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get('meta', {}).get('rng_state')
        if state is None or not getattr(runner, '_resume', False):
            return
        torch.set_rng_state(state['torch'])
        np.random.set_state(state['numpy'])
        random.setstate(_as_tuple(state['python']))
        if state['cuda'] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state['cuda'])


def _as_tuple(value):
    # python's random state is nested tuples; keep it so after a round trip
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuple(v) for v in value)
    return value


@HOOKS.register_module()
class SignalCheckpointHook(Hook):
    """On SIGTERM or SIGINT, finish the iteration, save, and exit.

    A second signal exits at once. The checkpoint is written like the
    CheckpointHook's (optimizer and schedulers included) and recorded in
    ``last_checkpoint``, so ``tools/train.py CONFIG --resume`` continues
    from it. Epoch-based loops resume at the start of the interrupted epoch
    (mmengine's behaviour); iteration-based loops resume exactly.
    """

    priority = 'VERY_LOW'
    signals = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self._received = None
        self._previous = {}

    def _handler(self, signum, frame):
        if self._received is not None:  # second signal: stop now
            self._restore()
            os.kill(os.getpid(), signum)
            return
        self._received = signum
        print_log(f'received {signal.Signals(signum).name}: saving a '
                  'checkpoint at the end of this iteration, then exiting',
                  logger='current', level=30)

    def _restore(self):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def before_train(self, runner) -> None:
        import threading
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in self.signals:
            self._previous[signum] = signal.signal(signum, self._handler)

    def after_train(self, runner) -> None:
        self._restore()

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        if self._received is None:
            return
        name = f'iter_{runner.iter + 1}.pth'
        runner.save_checkpoint(runner.work_dir, name, save_optimizer=True,
                               save_param_scheduler=True, by_epoch=False)
        if is_main_process():
            atomic_write_bytes(osp.join(runner.work_dir, name).encode(),
                               osp.join(runner.work_dir, 'last_checkpoint'))
        signame = signal.Signals(self._received).name
        print_log(f'{signame}: saved {name} in {runner.work_dir}; resume '
                  'with --resume', logger='current', level=30)
        self._restore()
        raise SystemExit(128 + self._received)


@HOOKS.register_module()
class FiniteLossHook(Hook):
    """Stop on a NaN/inf loss, naming the iteration and the last good
    checkpoint. Runs before the CheckpointHook, so the bad state (the
    optimizer has already stepped on it) is never saved. mmengine has no
    such hook, and mmdet's CheckInvalidLossHook only asserts."""

    priority = 'ABOVE_NORMAL'

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        if not outputs or 'loss' not in outputs:
            return
        loss = torch.as_tensor(outputs['loss'])
        if torch.isfinite(loss).all():
            return
        parts = ', '.join(f'{k}={float(torch.as_tensor(v).detach().mean()):.4g}'
                          for k, v in outputs.items() if 'loss' in k)
        last = runner.message_hub.get_info('last_ckpt')
        kept = (f'the last good checkpoint is {last} (resume with --resume)'
                if last else 'no checkpoint was saved yet')
        raise NonFiniteLossError(
            f'the training loss became {float(loss.mean())} at iteration '
            f'{runner.iter + 1} ({parts}); training stopped and {kept}. Try '
            'a lower learning rate, gradient clipping '
            '(optim_wrapper.clip_grad) or --amp loss scaling.')
