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
* :class:`CheckpointFitHook` refuses to resume from (or test) a checkpoint
  of another model (mmengine would load it partly and fail later, or not
  at all).
* :class:`ResumableEpochBasedTrainLoop` resumes an epoch-based run in the
  middle of an epoch at the next batch (mmengine restarts the epoch).
* :func:`find_resume_checkpoint` picks what ``--resume`` continues from,
  also when ``last_checkpoint`` (which mmengine writes non-atomically) is
  empty or stale.
"""
import glob
import os
import os.path as osp
import random
import signal
from typing import Optional

import numpy as np
import torch
from mmengine.dist import (all_reduce, get_rank, is_distributed,
                           is_main_process)
from mmengine.fileio.backends import LocalBackend, register_backend
from mmengine.hooks import Hook
from mmengine.logging import print_log
# the root registries: configs of every scope (mmseg, mmpretrain) see them
from mmengine.registry import HOOKS, LOOPS
from mmengine.runner import EpochBasedTrainLoop

from .fileio import atomic_write_bytes


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


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
        checkpoint.setdefault('meta', {})['rng_state'] = get_rng_state()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get('meta', {}).get('rng_state')
        if state is None or not getattr(runner, '_resume', False):
            return
        set_rng_state(state)


def bare_model(runner) -> torch.nn.Module:
    """The runner's model, outside its DDP wrapper if it has one."""
    from mmengine.model import is_model_wrapper
    return runner.model.module if is_model_wrapper(runner.model) \
        else runner.model


@HOOKS.register_module()
class CheckpointFitHook(Hook):
    """Refuse a checkpoint that does not fit the model, when it must.

    mmengine loads checkpoints non-strictly: mis-shaped, missing and
    unexpected weights are skipped with a warning. A resumed run then fails
    deep inside the optimizer or, worse, trains a partly loaded model, and
    a test evaluates one. Both must load every weight. ``load_from`` for
    training (without ``--resume``) stays lenient: it is how a new run
    starts from other weights.

    Args:
        only_on_resume: check resumes only (training configs); ``False``
            checks every load (``tools/test.py`` sets it).
    """

    priority = 'VERY_HIGH'

    def __init__(self, only_on_resume: bool = True):
        self.only_on_resume = only_on_resume

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        resuming = getattr(runner, '_resume', False)
        if self.only_on_resume and not resuming:
            return
        from .checkpoint import CheckpointError
        from .models.pretrained import state_dict_differences
        model = bare_model(runner)
        state = checkpoint.get('state_dict', checkpoint)
        # mmengine strips a DDP prefix when it loads (revise_keys)
        state = {k[len('module.'):] if k.startswith('module.') else k: v
                 for k, v in state.items()}
        problems = state_dict_differences(model.state_dict(), state)
        if not problems:
            return
        source = getattr(runner, '_load_from', None) or 'the checkpoint'
        fits = ('it does not fit the model of this config ('
                + '; '.join(problems) + ')')
        if resuming:
            raise CheckpointError(
                f'cannot resume from {source}: {fits}. Resume with the '
                'config the run was started with; to start a new run from '
                f'these weights, use --cfg-options load_from={source} '
                'without --resume.')
        raise CheckpointError(
            f'cannot evaluate {source}: {fits}. Use the config it was '
            'trained with (a deploy checkpoint from tools/convert.py goes '
            'with its *_deploy.py config).')


def get_rng_state() -> dict:
    """The torch, numpy, python and CUDA random states of this process."""
    return dict(torch=torch.get_rng_state(), numpy=np.random.get_state(),
                python=random.getstate(),
                cuda=(torch.cuda.get_rng_state_all()
                      if torch.cuda.is_available() else []))


def set_rng_state(state: dict) -> None:
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

    A second signal exits at once. In a distributed run all ranks stop
    after the same iteration, whichever got the signal. The checkpoint is
    written like the
    CheckpointHook's (optimizer and schedulers included) and recorded in
    ``last_checkpoint``, so ``tools/train.py CONFIG --resume`` continues
    from it: iteration-based loops and :class:`ResumableEpochBasedTrainLoop`
    at the next batch (mmengine's own epoch loop would restart the epoch).
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

    def _signal_to_stop(self) -> Optional[int]:
        """The signal that stops the run after this iteration, if any.

        Distributed: the largest signal number any rank received, so that
        every rank stops after the same iteration (Slurm signals the ranks
        at slightly different moments; a rank leaving one step early would
        leave the others waiting in a gradient all-reduce). One scalar
        all-reduce per iteration.
        """
        return max_over_ranks(self._received or 0) or None

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        signum = self._signal_to_stop()
        if signum is None:
            return
        name = f'iter_{runner.iter + 1}.pth'
        runner.save_checkpoint(runner.work_dir, name, save_optimizer=True,
                               save_param_scheduler=True, by_epoch=False)
        if is_main_process():
            atomic_write_bytes(osp.join(runner.work_dir, name).encode(),
                               osp.join(runner.work_dir, 'last_checkpoint'))
        signame = signal.Signals(signum).name
        print_log(f'{signame}: saved {name} in {runner.work_dir}; resume '
                  'with --resume', logger='current', level=30)
        self._restore()
        raise SystemExit(128 + signum)


@HOOKS.register_module()
class FiniteLossHook(Hook):
    """Stop on a NaN/inf loss, naming the iteration and the last good
    checkpoint. Runs before the CheckpointHook, so the bad state (the
    optimizer has already stepped on it) is never saved. mmengine has no
    such hook, and mmdet's CheckInvalidLossHook only asserts."""

    priority = 'ABOVE_NORMAL'

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        loss = None
        if outputs and 'loss' in outputs:
            loss = torch.as_tensor(outputs['loss']).detach()
        finite = loss is None or bool(torch.isfinite(loss).all())
        # Distributed: all ranks stop together. The optimizer has already
        # stepped on the all-reduced (non-finite) gradients everywhere, and
        # a rank left running would hang in the next all-reduce.
        if not max_over_ranks(int(not finite)):
            return
        last = runner.message_hub.get_info('last_ckpt')
        kept = (f'the last good checkpoint is {last} (resume with --resume)'
                if last else 'no checkpoint was saved yet')
        if finite:
            cause, detail = 'became non-finite on another rank', ''
        else:
            rank = f' on rank {get_rank()}' if is_distributed() else ''
            cause = f'became {float(loss.mean())}{rank}'
            detail = ' (' + ', '.join(
                f'{k}={float(torch.as_tensor(v).detach().mean()):.4g}'
                for k, v in outputs.items() if 'loss' in k) + ')'
        raise NonFiniteLossError(
            f'the training loss {cause} at iteration {runner.iter + 1}'
            f'{detail}; training stopped and {kept}. Try a lower learning '
            'rate, gradient clipping (optim_wrapper.clip_grad) or --amp loss '
            'scaling.')


def max_over_ranks(value: int) -> int:
    """The largest ``value`` over the ranks of a distributed run (one
    scalar all-reduce); ``value`` itself otherwise."""
    if not is_distributed():
        return value
    tensor = torch.tensor([value], dtype=torch.int64)
    all_reduce(tensor, op='max')
    return int(tensor.item())


@LOOPS.register_module()
class ResumableEpochBasedTrainLoop(EpochBasedTrainLoop):
    """mmengine's epoch loop, resuming mid-epoch at the next batch.

    After a mid-epoch checkpoint (SIGTERM, an iteration-interval
    CheckpointHook) mmengine's EpochBasedTrainLoop restarts the epoch from
    its first batch while the iteration count goes on, so a resumed run
    sees part of the epoch twice and trains more iterations than the
    schedule. This loop replays the interrupted epoch's sampler order,
    loads and discards the batches already trained (mmengine's
    IterBasedTrainLoop does the same), then puts back the main process's
    random state. The resumed run then draws the same batches as an
    uninterrupted one, and the same augmentations too when data workers are
    not persistent (``num_workers=0`` or ``persistent_workers=False``;
    persistent workers carry random state across epochs that no checkpoint
    holds).
    """

    def run_epoch(self) -> None:
        per_epoch = len(self.dataloader)
        done = self._iter - self._epoch * per_epoch
        if done <= 0:
            return super().run_epoch()
        if done > per_epoch:
            raise ValueError(
                f'cannot resume: the checkpoint is at iteration {self._iter} '
                f'of epoch {self._epoch + 1}, but an epoch now has only '
                f'{per_epoch} iterations (did the batch size, the number of '
                'GPUs or the data set change?)')
        self.runner.call_hook('before_train_epoch')
        self.runner.model.train()
        print_log(f'resuming epoch {self._epoch + 1} at batch {done + 1}/'
                  f'{per_epoch}: loading and skipping the {done} batches '
                  'already trained', logger='current')
        state = get_rng_state()
        batches = iter(self.dataloader)
        for _ in range(done):
            next(batches)
        set_rng_state(state)
        for idx, data_batch in enumerate(batches, start=done):
            self.run_iter(idx, data_batch)
        self.runner.call_hook('after_train_epoch')
        self._epoch += 1


def find_resume_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint ``--resume`` (without a path) continues from.

    mmengine's CheckpointHook records the latest checkpoint in
    ``work_dir/last_checkpoint`` with a plain ``open(..., 'w')``: a crash at
    the wrong moment leaves it empty, and a deleted checkpoint leaves it
    stale. The record is used when it names an existing, non-empty file;
    otherwise the newest ``*.pth`` in the work dir (checkpoints are written
    atomically, so every one there is complete). ``None`` when there is
    none.
    """
    record = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(record):
        with open(record) as f:
            named = f.read().strip()
        if named and osp.isfile(named) and osp.getsize(named) > 0:
            return named
        print_log(f'{record} names {named or "nothing"!r}, which is not a '
                  'checkpoint file; looking for the newest checkpoint in '
                  f'{work_dir}', logger='current', level=30)
    found = [p for p in glob.glob(osp.join(work_dir, '*.pth'))
             if osp.getsize(p) > 0]
    return max(found, key=osp.getmtime) if found else None
