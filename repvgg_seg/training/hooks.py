"""Crash-safe training hooks: a checkpoint on SIGTERM / SIGINT, exact random
state on resume, a stop on a non-finite loss, and a check that a resumed (or
tested) checkpoint fits the model.

mmengine provides the Runner, the CheckpointHook and ``--resume``; these
hooks close the gaps that matter for multi-day runs on pre-emptible
machines (with :mod:`.backend`'s atomic files and :mod:`.loops`' mid-epoch
resume):

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

All are registered in mmengine's root registry, so configs of every scope
(mmseg, mmpretrain) find them.
"""
import os
import os.path as osp
import signal
from typing import Optional

import torch
from mmengine.dist import get_rank, is_distributed, is_main_process
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

from ..errors import CheckpointError, NonFiniteLossError
from ..io.files import atomic_write_bytes
from ..io.state_dict import state_dict_differences, strip_prefix
from .state import (agree_over_ranks, bare_model, get_rng_state,
                    rank_rng_state, set_rng_state)


@HOOKS.register_module()
class RandomStateHook(Hook):
    """Save the RNG states with each checkpoint and restore them on resume.

    mmengine re-seeds a resumed run from the start, so without this the
    dropout masks (main process) would differ from an uninterrupted run.
    Every rank's states are saved (gathered by
    :class:`~repvgg_seg.training.ResumableRunner`; with mmengine's own
    Runner, this process's alone) in a form no ``map_location`` moves, and
    each rank restores its own. Data-loader workers re-seed themselves and
    replay the skipped batches, which reproduces their random state; with
    ``num_workers=0`` the augmentations share the main process's state and
    are not reproduced.
    """

    priority = 'VERY_HIGH'

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        meta = checkpoint.setdefault('meta', {})
        if 'rng_states' not in meta:
            meta['rng_states'] = [get_rng_state()]

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if not getattr(runner, '_resume', False):
            return
        meta = checkpoint.get('meta', {})
        states = meta.get('rng_states')
        if states is None and 'rng_state' in meta:  # before 0.2: one rank
            states = [meta['rng_state']]
        state = rank_rng_state(states) if states is not None else None
        if state is not None:
            set_rng_state(state)


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
        model = bare_model(runner)
        # mmengine strips a DDP prefix when it loads (revise_keys)
        state = strip_prefix(checkpoint.get('state_dict', checkpoint))
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


@HOOKS.register_module()
class SignalCheckpointHook(Hook):
    """On SIGTERM or SIGINT, finish the iteration, save, and exit.

    A second Ctrl-C (SIGINT) exits at once. A repeated SIGTERM does not:
    torchrun forwards the SIGTERM its tasks already got from the process
    group's, and schedulers follow SIGTERM with SIGKILL after a grace
    period, which the save uses. In a distributed run all ranks stop
    after the same iteration, whichever got the signal. The checkpoint is
    written like the CheckpointHook's (optimizer and schedulers included)
    and recorded in ``last_checkpoint``, so ``tools/train.py CONFIG
    --resume`` continues from it: iteration-based loops and
    :class:`ResumableEpochBasedTrainLoop` at the next batch (mmengine's own
    epoch loop would restart the epoch). Data-loader workers leave the
    signals to the main process (:class:`~repvgg_seg.training.
    ResumableRunner`).
    """

    priority = 'VERY_LOW'
    signals = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self._received = None
        self._agreed = None
        self._previous = {}

    def _handler(self, signum, frame):
        if self._received is not None:
            if signum == signal.SIGINT:  # Ctrl-C again: stop now
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

    @property
    def received(self) -> int:
        """The signal this process received (0 for none)."""
        return self._received or 0

    def agreed(self, iteration: int, signum: int) -> None:
        """The signal the ranks agreed on after ``iteration`` (0: none),
        from :class:`FiniteLossHook`'s exchange, which carries this hook's
        flag: one all-reduce per iteration for both hooks."""
        self._agreed = (iteration, signum)

    def _signal_to_stop(self, runner) -> Optional[int]:
        """The signal that stops the run after this iteration, if any.

        Distributed: the largest signal number any rank received, so that
        every rank stops after the same iteration (Slurm signals the ranks
        at slightly different moments; a rank leaving one step early would
        leave the others waiting in a gradient all-reduce). Agreed in
        :class:`FiniteLossHook`'s exchange when it runs, else here.
        """
        if self._agreed is not None and self._agreed[0] == runner.iter:
            return self._agreed[1] or None
        return agree_over_ranks([self.received])[0] or None

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        signum = self._signal_to_stop(runner)
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
        # a rank left running would hang in the next all-reduce. The same
        # exchange carries the signal flag of SignalCheckpointHook.
        signals = next((h for h in runner.hooks
                        if isinstance(h, SignalCheckpointHook)), None)
        nonfinite, signum = agree_over_ranks(
            [int(not finite), signals.received if signals else 0])
        if signals is not None:
            signals.agreed(runner.iter, signum)
        if not nonfinite:
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
