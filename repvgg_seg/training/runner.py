"""The Runner of the training configs: mmengine's, with checkpoints that
hold every rank's random state and data-loader workers that leave
SIGTERM/SIGINT to the main process while it trains."""
import atexit
import multiprocessing
import os
import signal
from typing import Callable, Optional

from mmengine.registry import RUNNERS  # the root registry: every scope
from mmengine.runner import Runner

from .state import gather_rng_states


class WorkerSignals:
    """A data-loader worker's init (wrapping the loader's own, mmengine's
    seeding) that keeps the worker alive through SIGTERM and SIGINT while
    the main process trains.

    torchrun, Slurm and a terminal's Ctrl-C signal the whole process group:
    a worker killed by the signal makes PyTorch raise "DataLoader worker
    ... killed" in the main process before it can save its checkpoint
    (:class:`~repvgg_seg.training.hooks.SignalCheckpointHook`). Once the
    main process is done training (:meth:`release`, also at its exit),
    SIGTERM ends a worker again: multiprocessing terminates and then joins
    leftover workers when the interpreter exits, and would wait forever for
    one that ignores it. Picklable, for the spawn start method.
    """

    def __init__(self, init_fn: Optional[Callable] = None,
                 released=None):
        self.init_fn = init_fn
        self.released = released or multiprocessing.Event()

    def wrapping(self, init_fn: Optional[Callable]) -> 'WorkerSignals':
        """The same release, around another loader's init."""
        return WorkerSignals(init_fn, self.released)

    def __call__(self, worker_id: int) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, self._on_sigterm)
        if self.init_fn is not None:
            self.init_fn(worker_id)

    def _on_sigterm(self, signum, frame) -> None:
        if self.released.is_set():
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    def release(self) -> None:
        self.released.set()


@RUNNERS.register_module()
class ResumableRunner(Runner):
    """mmengine's Runner for training (``runner_type`` of the configs).

    * A checkpoint holds the random states of every rank, not rank 0's
      alone (mmengine saves on rank 0 only): every rank calls
      ``save_checkpoint`` at the same iteration, so the states are gathered
      there and handed to rank 0's save in ``meta['rng_states']``, where
      :class:`~repvgg_seg.training.hooks.RandomStateHook` finds them; on
      resume each rank restores its own.
    * Data-loader workers leave SIGTERM/SIGINT to the main process while it
      trains (:class:`WorkerSignals`).
    """

    def __init__(self, *args, **kwargs):
        # before any loader is built; released at the end of train() and,
        # running before multiprocessing's own exit handler, at exit
        self.worker_signals = WorkerSignals()
        atexit.register(self.worker_signals.release)
        super().__init__(*args, **kwargs)

    def train(self):
        try:
            return super().train()
        finally:
            self.worker_signals.release()

    def save_checkpoint(self, out_dir: str, filename: str, *args,
                        meta: Optional[dict] = None, **kwargs):
        # a collective, on every rank; Runner.save_checkpoint is rank 0's
        meta = dict(meta or {}, rng_states=gather_rng_states())
        return super().save_checkpoint(out_dir, filename, *args, meta=meta,
                                       **kwargs)

    def build_dataloader(self, dataloader, *args, **kwargs):
        loader = Runner.build_dataloader(dataloader, *args, **kwargs)
        if getattr(loader, 'num_workers', 0):
            loader.worker_init_fn = self.worker_signals.wrapping(
                loader.worker_init_fn)
        return loader
