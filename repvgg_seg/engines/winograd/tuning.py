"""The per-layer plan of the Winograd engine: which method each converted
conv (and each run of dilated blocks) uses at one input shape.

Every candidate is timed in interleaved rounds (each round times each
candidate once, in a rotated order, so that drift and background load hit
all alike: :mod:`repvgg_seg.engines.interleaved`); the medians decide, and
an alternative replaces the baseline (direct convolution for a conv, the
per-conv plan for a run) only when it is at least :data:`MARGIN` faster: a
single timing flipped plans from run to run. Choices are cached per layer
signature, shape and thread count, in memory and optionally in a JSON file
(:func:`load_plans`, :func:`save_plans`).
"""
import json
import os.path as osp
from typing import Callable, Dict, Mapping, Optional, Sequence

import torch
import torch.nn as nn
from mmengine.logging import print_log

from ...io.files import write_json
from ..interleaved import medians, round_robin, seconds_per_call
from .conv import WinogradConv2d
from .surgery import DilatedRun, plain_conv

_PLAN_CACHE: Dict[str, str] = {}
#: a JSON file keeping tuned plans across runs (for the benchmark's engine)
CACHE_ENV = 'REPVGG_SEG_WINOGRAD_CACHE'
#: part of every plan key; bumped when the methods or the rule change
_VERSION = 'v3'
#: whole-run alternatives to the per-conv plan (all convs of a run alike)
RUN_CHOICES = ('nnpack_mosaic', 'nnpack', 'direct_s2b')
#: how much faster (in median) an alternative must be to replace the baseline
MARGIN = 0.05


def _shape_key(shape: Sequence[int]) -> str:
    return f'{"x".join(map(str, shape))}-t{torch.get_num_threads()}'


def conv_key(conv: WinogradConv2d, shape: Sequence[int]) -> str:
    """The cache key of a conv's choice at ``shape``."""
    return (f'{_VERSION}:{conv.in_channels}-{conv.out_channels}-'
            f'g{conv.groups}-d{conv.dilation[0]}x{conv.dilation[1]}-'
            + _shape_key(shape))


def run_key(convs: Sequence[WinogradConv2d], shape: Sequence[int]) -> str:
    """The cache key of a dilated run's choice at ``shape``."""
    return (f'{_VERSION}:run-' + '-'.join(
        f'{c.in_channels}.{c.out_channels}.g{c.groups}' for c in convs)
        + f'-d{convs[0].dilation[0]}x{convs[0].dilation[1]}-'
        + _shape_key(shape))


def _time_once(fn: Callable, x: torch.Tensor) -> float:
    return seconds_per_call(lambda: fn(x))


def interleaved_medians(fn: Callable, x: torch.Tensor,
                        setups: Mapping[str, Callable[[], None]],
                        rounds: int) -> Dict[str, float]:
    """The median seconds of ``fn(x)`` under each candidate's setup over
    ``rounds`` rounds (:func:`~repvgg_seg.engines.interleaved.round_robin`:
    each round times every candidate once, the order rotated from round to
    round). One untimed call per candidate first (NNPACK allocates, oneDNN
    creates its primitive)."""
    names = list(setups)
    for name in names:
        setups[name]()
        fn(x)

    def turn(name):
        def timed():
            setups[name]()
            return [_time_once(fn, x)]
        return timed

    samples = round_robin([turn(n) for n in names], max(1, rounds),
                          rotate=True)
    return dict(zip(names, medians(samples)))


def pick(medians: Mapping[str, float], baseline: str,
         margin: float = MARGIN) -> str:
    """The fastest candidate if its median is at least ``margin`` (a
    fraction) below the baseline's, else the baseline."""
    best = min(medians, key=medians.get)
    if best != baseline and medians[best] <= (1 - margin) * medians[baseline]:
        return best
    return baseline


def tune(label: str, key: str, module: nn.Module, shape: Sequence[int],
         setups: Mapping[str, Callable[[], None]], baseline: str,
         rounds: int, margin: float = MARGIN) -> bool:
    """Apply the choice cached under ``key``, or time ``module`` at
    ``shape`` under each of ``setups`` (:func:`interleaved_medians`), pick
    (:func:`pick`), log, cache and apply it. Returns whether it was measured
    now."""
    measured = _PLAN_CACHE.get(key) not in setups
    if measured:
        x = torch.randn(*shape)
        with torch.inference_mode():
            medians = interleaved_medians(module, x, setups, rounds)
        choice = _PLAN_CACHE[key] = pick(medians, baseline, margin)
        best = min(medians, key=medians.get)
        why = ''
        if best != choice and medians[baseline] > 0:
            gain = 1 - medians[best] / medians[baseline]
            why = (f' ({best} {100 * gain:.1f}% faster, under the '
                   f'{100 * margin:g}% margin)')
        print_log(f'winograd plan: {label} {key}: ' + ', '.join(
            f'{m} {t * 1e3:.2f} ms' for m, t in medians.items())
            + f' (medians of {max(1, rounds)} interleaved rounds) -> '
            f'{choice}{why}', logger='current')
    setups[_PLAN_CACHE[key]]()
    return measured


def _set_method(conv: WinogradConv2d, method: str) -> Callable[[], None]:
    def setup():
        conv.method = method
    return setup


def tune_conv(name: str, conv: WinogradConv2d, shape: Sequence[int],
              rounds: int, margin: float = MARGIN) -> bool:
    """Choose ``conv.method`` among its methods at ``shape``; direct
    convolution unless another method is clearly faster."""
    setups = {m: _set_method(conv, m) for m in conv.methods}
    return tune(name, conv_key(conv, shape), conv, shape, setups, 'direct',
                rounds, margin)


def tune_run(name: str, run: DilatedRun, shape: Sequence[int], rounds: int,
             margin: float = MARGIN) -> bool:
    """Choose between a run's per-conv plan (``'plan'``, already tuned) and
    each of :data:`RUN_CHOICES` for all its convs (one rearrangement for
    the whole run); the plan unless a choice is clearly faster."""
    convs = [plain_conv(b) for b in run.blocks]
    per_conv = [c.method for c in convs]

    def setup(choice):
        def apply():
            for conv, method in zip(convs, per_conv):
                conv.method = method if choice == 'plan' else choice
        return apply

    setups = {c: setup(c) for c in ('plan', ) + RUN_CHOICES}
    return tune(f'run {name} ({len(convs)} blocks)', run_key(convs, shape),
                run, shape, setups, 'plan', rounds, margin)


def load_plans(path: Optional[str]) -> None:
    """Add the plans kept in the JSON file ``path`` (if it exists) to the
    in-memory cache."""
    if path and osp.isfile(path):
        with open(path) as f:
            _PLAN_CACHE.update(json.load(f))


def save_plans(path: str) -> None:
    """Write the in-memory cache to the JSON file ``path`` (atomically: a
    concurrent reader sees the old file or the new one)."""
    write_json(_PLAN_CACHE, path, indent=1, sort_keys=True)
