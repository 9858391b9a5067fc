"""Crash-safe training inside an mmengine Runner: atomic checkpoint files
(:mod:`.backend`), hooks for signals, random state, non-finite losses and
checkpoint fit (:mod:`.hooks`), the mid-epoch resumable loop (:mod:`.loops`), the Runner
that saves every rank's random state (:mod:`.runner`) and what ``--resume``
continues from (:mod:`.state`). Importing it registers the hooks, the loop
and the Runner in mmengine's root registries."""
from .backend import AtomicLocalBackend, register_atomic_backend
from .hooks import (CheckpointFitHook, FiniteLossHook, NonFiniteLossError,
                    RandomStateHook, SignalCheckpointHook)
from .loops import ResumableEpochBasedTrainLoop
from .runner import ResumableRunner
from .state import find_resume_checkpoint

__all__ = [
    'AtomicLocalBackend', 'register_atomic_backend', 'CheckpointFitHook',
    'FiniteLossHook', 'NonFiniteLossError', 'RandomStateHook',
    'SignalCheckpointHook', 'ResumableEpochBasedTrainLoop', 'ResumableRunner',
    'find_resume_checkpoint'
]
