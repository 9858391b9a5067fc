"""An opt-in Winograd engine for fused models on the CPU (NNPACK).

A fused RepVGG is a stack of 3x3 convs; PyTorch's default CPU path (oneDNN)
computes them directly. NNPACK's Winograd convolution needs far fewer
multiplications for stride-1 3x3 convs (the paper's "Wino MULs") and is
exposed by PyTorch as ``torch._nnpack_spatial_convolution`` -- fp32, NCHW,
contiguous input, no groups, no dilation, about 1e-5 relative error.

:func:`convert_to_winograd` swaps (at deploy time, on a fused model) every
eligible conv for a :class:`WinogradConv2d` that computes the same function:

* groups: one NNPACK conv per group on the channel slices, concatenated;
* dilation ``d`` (with padding ``d``): an ordinary 3x3 conv on each of the
  ``d x d`` sub-grids, either batched by a space-to-batch rearrangement
  (:func:`space_to_batch`) or tiled into one image with zero gaps
  (:func:`space_to_mosaic`, one batch-1 NNPACK call); a **run** of
  consecutive dilated fused RepVGG blocks (conv + ReLU) with the same
  dilation is computed inside one rearrangement (:class:`DilatedRun`),
  re-zeroing the padding and gaps between layers;
* the algorithm is chosen **per layer by measurement** at the model's input
  shape: every method of :class:`WinogradConv2d` (direct, NNPACK, and for
  dilated convs also NNPACK on a mosaic of the sub-grids and direct on the
  sub-grids) is timed in interleaved rounds, and direct convolution is kept
  unless another method's median is clearly (:data:`MARGIN`) faster; the
  plan is cached per layer signature, shape and thread count, in memory and
  optionally in a JSON file (:mod:`.tuning`).

The converted model is checked against the direct convolution before use
(relative error bound ``tolerance``, default 1e-4).

Modules: :mod:`.layout` (the sub-grid rearrangements), :mod:`.conv`
(:class:`WinogradConv2d`, NNPACK's availability), :mod:`.surgery` (swapping
convs, grouping dilated runs), :mod:`.tuning` (the plan and its cache).

Use ``tools/benchmark.py --engine winograd`` or :func:`convert_to_winograd`.
"""
import copy
import os
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.logging import print_log

from ...errors import VerificationError
from ...models.convert import compare_outputs, flatten_tensors
from ..base import TorchRunner
from .conv import (WinogradConv2d, is_candidate, nnpack_available, nnpack_conv,
                   require_nnpack)
from .layout import (batch_to_space, layout_mask, mosaic_to_space,
                     space_to_batch, space_to_mosaic)
from .surgery import DilatedRun, group_dilated_runs, plain_conv, swap_convs
from .tuning import (CACHE_ENV, MARGIN, RUN_CHOICES, load_plans, save_plans,
                     tune_conv, tune_run)

__all__ = [
    'CACHE_ENV', 'MARGIN', 'RUN_CHOICES', 'DilatedRun', 'WinogradConv2d',
    'batch_to_space', 'convert_to_winograd', 'is_candidate', 'layout_mask',
    'mosaic_to_space', 'nnpack_available', 'nnpack_conv', 'plain_conv',
    'require_nnpack', 'space_to_batch', 'space_to_mosaic', 'winograd_runner'
]


def _forward_recording_shapes(
        model: nn.Module,
        sample: torch.Tensor) -> Tuple[object, Dict[str, Tuple[int, ...]]]:
    """``model(sample)`` and the input shape of every candidate conv it
    called (``{name: shape}``, in call order), from the same forward."""
    shapes: Dict[str, Tuple[int, ...]] = {}

    def recorder(name):
        def hook(module, args):
            shapes.setdefault(name, tuple(args[0].shape))
        return hook

    hooks = [module.register_forward_pre_hook(recorder(name))
             for name, module in model.named_modules()
             if is_candidate(module)]
    try:
        with torch.inference_mode():
            out = model(sample)
    finally:
        for hook in hooks:
            hook.remove()
    return out, shapes


def convert_to_winograd(model: nn.Module,
                        input_shape: Sequence[int],
                        tune: bool = True,
                        reps: int = 5,
                        group_runs: bool = True,
                        cache_file: Optional[str] = None,
                        check: bool = True,
                        tolerance: float = 1e-4,
                        margin: float = MARGIN) -> dict:
    """Swap the eligible convs of ``model`` (in place, fp32, CPU, eval) for
    :class:`WinogradConv2d` and choose each one's method.

    Args:
        model (nn.Module): the fused model, converted in place.
        input_shape (Sequence[int]): the ``N x 3 x H x W`` input the plan is
            tuned for.
        tune (bool): time each conv with each of its methods (see
            :class:`WinogradConv2d`) at its input shape, then each run of
            dilated blocks with that plan and with one method for all its
            convs (:data:`RUN_CHOICES`); without it every eligible conv uses
            NNPACK (``'nnpack_mosaic'`` when dilated). Defaults to True.
        reps (int): interleaved timing rounds (each times every candidate
            once; the medians decide). Defaults to 5.
        group_runs (bool): compute runs of dilated RepVGG blocks in one
            rearrangement (:class:`DilatedRun`). Defaults to True.
        cache_file (str, optional): a JSON file that keeps the tuned
            choices across runs. Defaults to None.
        check (bool): compare the converted model's output with the
            original's on a random input and raise
            :class:`VerificationError` if the relative error exceeds
            ``tolerance``. Defaults to True.
        tolerance (float): see ``check``. Defaults to 1e-4.
        margin (float): how much faster (a fraction, in median) a method
            must be than direct convolution (a run's choice than its
            per-conv plan) to be chosen. Defaults to :data:`MARGIN`.

    Returns:
        dict: ``{'convs', 'nnpack', 'direct', 'runs', 'max_rel_error',
        'plan': {conv name: method}}``; the plan is also kept on the model
        as ``model.winograd_plan``.
    """
    require_nnpack()
    model.eval()
    gen = torch.Generator().manual_seed(0)
    sample = torch.randn(*input_shape, generator=gen)
    # one forward: the reference output and the shapes to tune at
    reference, shapes = _forward_recording_shapes(model, sample)
    runs = _swap_and_tune(model, shapes, tune, reps, group_runs, cache_file,
                          margin)
    plan = {name: module.method for name, module in model.named_modules()
            if isinstance(module, WinogradConv2d)}
    model.winograd_plan = plan
    report = dict(convs=len(plan),
                  nnpack=sum(m.startswith('nnpack') for m in plan.values()),
                  direct=sum(m.startswith('direct') for m in plan.values()),
                  runs=len(runs), plan=plan, max_rel_error=None)
    if check:
        report['max_rel_error'] = _checked_error(model, sample, reference,
                                                 tolerance)
    print_log(f'winograd engine: {report["nnpack"]} of {report["convs"]} '
              f'stride-1 3x3 convs on NNPACK, {len(runs)} runs of dilated '
              'blocks grouped' + (
                  f'; max relative error vs direct '
                  f'{report["max_rel_error"]:.2g}' if check else ''),
              logger='current')
    return report


def _swap_and_tune(model: nn.Module, shapes: Dict[str, Tuple[int, ...]],
                   tune: bool, reps: int, group_runs: bool,
                   cache_file: Optional[str], margin: float) -> list:
    """Swap the convs named in ``shapes``, group the dilated runs and,
    with ``tune``, choose every conv's and run's method (cached plans
    first); returns the runs."""
    load_plans(cache_file)
    measured = 0
    for name, conv in swap_convs(model, list(shapes)).items():
        if tune:
            measured += tune_conv(name, conv, shapes[name], reps, margin)
    runs = group_dilated_runs(model, shapes) if group_runs else []
    if tune:
        for run_name, run, shape in runs:
            if shape is not None:
                measured += tune_run(run_name, run, shape, reps, margin)
    if cache_file and measured:
        save_plans(cache_file)
    return runs


def _checked_error(model: nn.Module, sample: torch.Tensor, reference,
                   tolerance: float) -> float:
    """The converted model's max relative error against ``reference`` on
    ``sample``; :class:`VerificationError` above ``tolerance``."""
    with torch.inference_mode():
        out = model(sample)
    error = compare_outputs(flatten_tensors(reference),
                            flatten_tensors(out))['max_rel_diff']
    if error > tolerance:
        raise VerificationError(
            f'the Winograd model differs from the direct convolution: '
            f'max relative error {error:.3g} > {tolerance:g}')
    return error


class WinogradRunner(TorchRunner):
    """A converted copy of a fused module (:func:`convert_to_winograd`) as
    a runner on the CPU, fp32; ``info`` records the conversion for the
    benchmark's row (``winograd_convs``, ``winograd_nnpack_convs``,
    ``winograd_plan``: ``{conv name: method}``)."""

    def __init__(self, module: nn.Module, input_shape: Sequence[int],
                 **kwargs):
        converted = copy.deepcopy(module).cpu().eval()
        report = convert_to_winograd(converted, input_shape, **kwargs)
        super().__init__(converted, info=dict(
            winograd_convs=report['convs'],
            winograd_nnpack_convs=report['nnpack'],
            winograd_plan=report['plan']))


def winograd_runner(module: nn.Module, input_shape: Sequence[int],
                    **kwargs) -> WinogradRunner:
    """A :class:`WinogradRunner` of ``module`` for inputs of
    ``input_shape`` (the benchmark's rows, the engine); ``kwargs`` go to
    :func:`convert_to_winograd`. The tuned plan is kept in the JSON file
    named by ``$REPVGG_SEG_WINOGRAD_CACHE``, if set."""
    kwargs.setdefault('cache_file', os.environ.get(CACHE_ENV) or None)
    return WinogradRunner(module, input_shape, **kwargs)
