"""Timing several candidates against each other: interleaved rounds.

Candidates timed one after the other would be compared across whatever
changed in between (a clock step, a background load, a warmer cache); so
every candidate takes a turn in every round and the rounds repeat, and
medians (which one stray sample does not move) decide. The Winograd
engine's per-layer plan (:mod:`.winograd.tuning`) and the benchmark's rows
and measured peak (:mod:`repvgg_seg.bench`) are timed this way: it lives
here, below both.
"""
import statistics
import time
from typing import Callable, List, Optional, Sequence

import torch

#: one turn of a candidate: runs it and returns the seconds it measured
Turn = Callable[[], Sequence[float]]


def sync(device) -> None:
    """Wait for the device's queued work (timing on CUDA needs it)."""
    if str(device).startswith('cuda'):
        torch.cuda.synchronize(torch.device(device))


def seconds_per_call(fn: Callable[[], object], calls: int = 1,
                     device='cpu') -> float:
    """Seconds per call of ``calls`` back-to-back calls of ``fn()``, the
    device's queued work done before the clock starts and after the last
    call."""
    sync(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    sync(device)
    return (time.perf_counter() - start) / calls


def round_robin(turns: Sequence[Turn], rounds: int, rotate: bool = False,
                after_round: Optional[Callable[[int, List[List[float]]],
                                               None]] = None
                ) -> List[List[float]]:
    """``rounds`` rounds in each of which every turn runs once, in the
    order given or, with ``rotate``, in an order rotated by one from round
    to round (so no candidate always follows the same one). Returns each
    turn's samples, in the order of ``turns``; ``after_round(r,
    samples)`` sees them after each round."""
    samples: List[List[float]] = [[] for _ in turns]
    order = list(range(len(turns)))
    for r in range(rounds):
        k = r % len(order) if rotate and order else 0
        for i in order[k:] + order[:k]:
            samples[i].extend(turns[i]())
        if after_round is not None:
            after_round(r, samples)
    return samples


def medians(samples: Sequence[Sequence[float]]) -> List[float]:
    """The median of each candidate's samples."""
    return [statistics.median(s) for s in samples]
