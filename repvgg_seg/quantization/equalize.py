"""Cross-layer equalization of a fused model before INT8 quantization
(Nagel et al., "Data-Free Quantization Through Weight Equalization and Bias
Correction", ICCV 2019).

A fused RepVGG is a chain conv -> ReLU -> conv, and ``relu(s*x) =
s*relu(x)`` for ``s > 0``: dividing output channel ``c`` of a conv (weight
and bias) by ``s_c`` and multiplying the input channel ``c`` of every conv
that reads it by ``s_c`` keeps the fp32 function (:mod:`.channels` finds the
pairs, the PSP head's concatenation and the stage outputs read by several
heads included). With

    s_c = sqrt(r1_c / r2_c),

``r1_c`` the range of the producer's output channel (max |w| over its
other dimensions) and ``r2_c`` the range of input channel ``c`` over *all*
consumers (max over them of max |w[:, c]|), both become
``sqrt(r1_c * r2_c)``: channels whose ranges differ by orders of magnitude
(the outliers that make a per-tensor activation scale crush the small
channels) come out balanced. One pair's scales change its neighbours'
ranges, so the whole chain is swept again: Nagel iterates until converged;
here :data:`SWEEPS` sweeps (what measured enough), stopping early once a
sweep's scales are all within ``tolerance`` of 1.

:func:`check_function_preserved` compares the model before and after on
given inputs (decode and auxiliary logits), for the export path to refuse a
transform that is not exact.

The ranges are the weights' (data-free): activation ranges from
calibration images measured worse, and NNCF's own channel alignment leaves
conv -> ReLU -> conv alone (docs/benchmarks.md, "Equalization sweeps").
"""
import math
from typing import Dict, Iterable, Optional, Union

import torch
import torch.nn as nn
from mmengine.logging import print_log

from ..errors import InputError, VerificationError
from .channels import ChannelGraph, channel_graph
from .scaling import (function_outputs, input_range, output_range,
                      scale_channels, worst_relative_error)

#: Sweeps of :func:`equalize`: the fewest never below plain PTQ in
#: agreement on every model measured (docs/benchmarks.md, "Equalization
#: sweeps").
SWEEPS = 3
#: the fp32 function must stay within this relative error (max abs logit
#: difference / max abs logit, per output)
TOLERANCE = 1e-5


def _batches(inputs) -> list:
    if isinstance(inputs, torch.Tensor):
        return [inputs] if inputs.dim() == 4 else [inputs[None]]
    return list(inputs)


@torch.no_grad()
def check_function_preserved(before: nn.Module, after: nn.Module,
                             inputs: Union[torch.Tensor,
                                           Iterable[torch.Tensor]],
                             tolerance: Optional[float] = TOLERANCE) -> dict:
    """Compare ``after`` (a transformed model) with ``before`` (a copy
    taken before the transform) on ``inputs`` (an ``N x 3 x H x W`` tensor
    or an iterable of them), in eval mode: every logit output (the decode
    head's and the auxiliary heads' of a segmentor). Returns ``dict(
    max_abs_diff, max_rel_diff, inputs)`` (the worst output of the worst
    input); raises :class:`VerificationError` when ``max_rel_diff`` exceeds
    ``tolerance`` (``None``: never)."""
    modes = before.training, after.training
    before.eval()
    after.eval()
    worst, count = dict(max_abs_diff=0.0, max_rel_diff=0.0), 0
    try:
        for x in _batches(inputs):
            result = worst_relative_error(function_outputs(before, x),
                                          function_outputs(after, x))
            count += 1
            if result['max_rel_diff'] >= worst['max_rel_diff']:
                worst = result
    finally:
        before.train(modes[0])
        after.train(modes[1])
    if count == 0:
        raise InputError('check_function_preserved needs at least one input')
    report = dict(worst, inputs=count)
    if tolerance is not None and report['max_rel_diff'] > tolerance:
        raise VerificationError(
            f'the transformed model differs from the original: max relative '
            f'logit error {report["max_rel_diff"]:.3g} > {tolerance:g} on '
            f'{count} inputs')
    return report


def _pair_scales(r1: torch.Tensor, r2: torch.Tensor, max_scale: float,
                 power_of_two: bool) -> torch.Tensor:
    """sqrt(r1 / r2), 1 where either range is 0 (a dead channel, or one no
    consumer reads: no ratio to balance), clamped to [1/max, max]; with
    ``power_of_two`` rounded to the nearest power of two (within it)."""
    r1, r2 = r1.double().cpu(), r2.double().cpu()
    alive = (r1 > 0) & (r2 > 0) & torch.isfinite(r1) & torch.isfinite(r2)
    scale = torch.ones_like(r1)
    scale[alive] = torch.sqrt(r1[alive] / r2[alive])
    if power_of_two:
        limit = math.floor(math.log2(max_scale))
        return torch.exp2(torch.log2(scale).round().clamp(-limit, limit))
    return scale.clamp(1 / max_scale, max_scale)


def _sweep(graph: ChannelGraph, max_scale: float, power_of_two: bool,
           total: Dict[str, torch.Tensor], dead: Dict[str, int]) -> float:
    """One sweep over the chain: each producer balanced with its consumers
    in forward order. Accumulates every producer's scales in ``total`` and
    its dead channels in ``dead``; returns the sweep's largest step
    ``max(s, 1/s)``."""
    step = 1.0
    for producer in graph.producers:
        r1, r2 = output_range(producer), input_range(producer)
        scale = _pair_scales(r1, r2, max_scale, power_of_two)
        dead[producer.name] = int(((r1.cpu() <= 0) | (r2.cpu() <= 0)).sum())
        scale_channels(producer, 1 / scale)
        total[producer.name] *= scale
        step = max(step, float(torch.maximum(scale, 1 / scale).max()))
    return step


def _report(graph: ChannelGraph, total: Dict[str, torch.Tensor],
            dead: Dict[str, int], sweeps: int, converged: bool,
            step: float, power_of_two: bool) -> dict:
    """:func:`equalize`'s report, and its log line."""
    pairs = [dict(p.describe(),
                  scale_min=float(1 / total[p.name].max()),
                  scale_max=float(1 / total[p.name].min()),
                  dead_channels=dead.get(p.name, 0))
             for p in graph.producers]
    print_log(f'cross-layer equalization: {len(pairs)} producers, '
              f'{sum(len(p["consumers"]) for p in pairs)} consumer convs, '
              f'{len(graph.skipped)} skipped; {sweeps} sweeps (last step '
              f'{step:.4g}{", converged" if converged else ""})',
              logger='current')
    return dict(power_of_two=power_of_two, sweeps=sweeps,
                converged=converged, last_step=step, pairs=pairs,
                skipped=graph.skipped)


@torch.no_grad()
def equalize(model: nn.Module, sweeps: int = SWEEPS,
             tolerance: float = 1e-3, max_scale: float = 1e4,
             power_of_two: bool = False,
             graph: Optional[ChannelGraph] = None) -> dict:
    """Cross-layer equalization of a fused model, in place (see the module
    docstring).

    Args:
        sweeps: sweeps over the whole chain at most (:data:`SWEEPS`: what
            measured best, see there).
        tolerance: stop early after a sweep whose scales are all within
            ``1 +- tolerance`` (converged).
        max_scale: one sweep's scale per channel is clamped to
            ``[1/max_scale, max_scale]`` (a near-dead channel must not blow
            up its consumers' weights).
        power_of_two: round each scale to a power of two. Multiplying by
            2^n only changes a float's exponent, so every product and
            partial sum of the equalized model is the original's times 2^n,
            exactly: the fp32 function is bit-identical. Without it,
            rounding the scaled weights moves the logits by ~1e-6 relative
            (A0; 6e-6 on a random B1g2-fast): use it where that fails
            :func:`check_function_preserved`. The balance is then only
            within a factor 2, which measured slightly worse in INT8 (see
            :data:`SWEEPS`).
        graph: :func:`~.channels.channel_graph` of ``model`` (computed when
            not given).

    Returns:
        ``dict(power_of_two, sweeps, converged, last_step, pairs,
        skipped)``:
        ``last_step`` is the largest ``max(s, 1/s)`` of the last sweep;
        ``pairs`` per producer its consumers, the total scale range applied
        to its output channels (``scale_min``/``scale_max``) and its
        ``dead_channels`` (left at 1); ``skipped`` what was left alone and
        why.
    """
    if sweeps < 1 or not tolerance > 0 or not max_scale > 1:
        raise InputError(f'need sweeps >= 1, tolerance > 0 and max_scale > '
                         f'1, got {sweeps}, {tolerance}, {max_scale}')
    graph = graph or channel_graph(model)
    total = {p.name: torch.ones(p.channels, dtype=torch.float64)
             for p in graph.producers}
    dead = {}
    converged, done, step = not graph.producers, 0, 1.0
    for done in range(1, sweeps + 1 if graph.producers else 1):
        step = _sweep(graph, max_scale, power_of_two, total, dead)
        if step <= 1 + tolerance:
            converged = True
            break
    return _report(graph, total, dead, done, converged, step, power_of_two)
