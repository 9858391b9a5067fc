"""The training loop of the epoch-based configs."""
from mmengine.logging import print_log
from mmengine.registry import LOOPS  # the root registry: every scope sees it
from mmengine.runner import EpochBasedTrainLoop

from .state import get_rng_state, set_rng_state


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
