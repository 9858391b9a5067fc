"""Crash-safe training inside an mmengine Runner: atomic checkpoint files
(:mod:`.backend`), hooks for signals, random state, non-finite losses and
checkpoint fit (:mod:`.hooks`), the mid-epoch resumable loop (:mod:`.loops`)
and what ``--resume`` continues from (:mod:`.state`). Importing it registers
the hooks and the loop in mmengine's root registries."""
from .backend import AtomicLocalBackend, register_atomic_backend
from .hooks import (CheckpointFitHook, FiniteLossHook, NonFiniteLossError,
                    RandomStateHook, SignalCheckpointHook)
from .loops import ResumableEpochBasedTrainLoop
from .state import find_resume_checkpoint

__all__ = [
    'AtomicLocalBackend', 'register_atomic_backend', 'CheckpointFitHook',
    'FiniteLossHook', 'NonFiniteLossError', 'RandomStateHook',
    'SignalCheckpointHook', 'ResumableEpochBasedTrainLoop',
    'find_resume_checkpoint'
]
