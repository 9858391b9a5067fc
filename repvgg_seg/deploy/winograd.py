"""An opt-in Winograd engine for fused models on the CPU (NNPACK).

A fused RepVGG is a stack of 3x3 convs; PyTorch's default CPU path (oneDNN)
computes them directly. NNPACK's Winograd convolution needs far fewer
multiplications for stride-1 3x3 convs (the paper's "Wino MULs") and is
exposed by PyTorch as ``torch._nnpack_spatial_convolution`` -- fp32, NCHW,
contiguous input, no groups, no dilation, about 1e-5 relative error.

This module swaps (at deploy time, on a fused model) every eligible conv for a
:class:`WinogradConv2d` that computes the same function:

* groups: one NNPACK conv per group on the channel slices, concatenated;
* dilation ``d`` (with padding ``d``): an ordinary 3x3 conv on each of the
  ``d x d`` sub-grids, either batched by a space-to-batch rearrangement
  (:func:`space_to_batch`) or tiled into one image with zero gaps
  (:func:`space_to_mosaic`, one batch-1 NNPACK call); a **run** of
  consecutive dilated fused RepVGG blocks (conv + ReLU) with the same
  dilation is computed inside one rearrangement (:class:`DilatedRun`),
  re-zeroing the padding and gaps between layers;
* the algorithm is chosen **per layer by measurement**: at the model's input
  shape every candidate is timed with each method of
  :class:`WinogradConv2d` (direct, NNPACK, and for dilated convs also NNPACK
  on a mosaic of the sub-grids and direct on the sub-grids) and the fastest
  is kept (the
  plan is cached per layer signature, shape and thread count, in memory and
  optionally in a JSON file).

The converted model is checked against the direct convolution before use
(relative error bound ``tolerance``, default 1e-4).

Use ``tools/benchmark.py --engine winograd`` or :func:`convert_to_winograd`.
"""
import copy
import functools
import json
import os
import os.path as osp
import statistics
import time
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import print_log

from ..errors import InputError, UnavailableError, VerificationError
from ..io.files import write_json
from ..models.convert import compare_outputs, flatten_tensors


@functools.lru_cache(maxsize=None)
def nnpack_available() -> bool:
    """Whether NNPACK can run here (``torch._nnpack_available()`` must be
    called once before the first NNPACK convolution)."""
    try:
        return bool(torch._nnpack_available())
    except (AttributeError, RuntimeError):
        return False


def require_nnpack() -> None:
    """Raise :class:`UnavailableError` unless NNPACK can run here."""
    if not nnpack_available():
        raise UnavailableError('the winograd engine needs NNPACK, which '
                               'this PyTorch build lacks')


def _pair(v) -> Tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def is_candidate(conv: nn.Module) -> bool:
    """A stride-1 3x3 fp32 conv with zero padding equal to its dilation."""
    if type(conv) is not nn.Conv2d or conv.padding_mode != 'zeros':
        return False
    if isinstance(conv.padding, str):
        return False
    return (_pair(conv.kernel_size) == (3, 3) and _pair(conv.stride) == (1, 1)
            and _pair(conv.padding) == _pair(conv.dilation)
            and conv.weight.dtype == torch.float32)


# --------------------------------------------------------------------------
# space-to-batch


def space_to_batch(x: torch.Tensor, dh: int, dw: int) -> torch.Tensor:
    """``N x C x H x W`` -> ``(N*dh*dw) x C x ceil(H/dh) x ceil(W/dw)``: the
    ``dh x dw`` sub-grids as a batch (zero padded to multiples of d)."""
    n, c, h, w = x.shape
    hp, wp = -(-h // dh) * dh, -(-w // dw) * dw
    if (hp, wp) != (h, w):
        x = F.pad(x, (0, wp - w, 0, hp - h))
    x = x.view(n, c, hp // dh, dh, wp // dw, dw)
    return x.permute(0, 3, 5, 1, 2, 4).reshape(n * dh * dw, c, hp // dh,
                                               wp // dw)


def batch_to_space(x: torch.Tensor, dh: int, dw: int, h: int,
                   w: int) -> torch.Tensor:
    """The inverse of :func:`space_to_batch`, cropped to ``h x w``."""
    nb, c, hs, ws = x.shape
    n = nb // (dh * dw)
    x = x.view(n, dh, dw, c, hs, ws).permute(0, 3, 4, 1, 5, 2)
    x = x.reshape(n, c, hs * dh, ws * dw)
    if (hs * dh, ws * dw) != (h, w):
        x = x[:, :, :h, :w]
    return x.contiguous()


def space_to_mosaic(x: torch.Tensor, dh: int, dw: int) -> torch.Tensor:
    """``N x C x H x W`` -> ``N x C x dh*(Hs+1) x dw*(Ws+1)``: the ``dh x dw``
    sub-grids (``Hs x Ws`` each, see :func:`space_to_batch`) tiled side by
    side in one image, each followed by one zero row and column.

    A 3x3 conv with padding 1 on the mosaic computes the dilated conv on
    every sub-grid at once (the zero gaps are their padding), as one batch-1
    convolution, which is NNPACK's fast inference path.
    """
    n, c = x.shape[:2]
    sub = F.pad(space_to_batch(x, dh, dw), (0, 1, 0, 1))
    hs, ws = sub.shape[-2:]
    return sub.view(n, dh, dw, c, hs, ws).permute(0, 3, 1, 4, 2, 5).reshape(
        n, c, dh * hs, dw * ws)


def mosaic_to_space(y: torch.Tensor, dh: int, dw: int, h: int,
                    w: int) -> torch.Tensor:
    """The inverse of :func:`space_to_mosaic`, cropped to ``h x w``."""
    n, c, mh, mw = y.shape
    hs, ws = mh // dh, mw // dw
    y = y.view(n, c, dh, hs, dw, ws)[:, :, :, :hs - 1, :, :ws - 1]
    y = y.permute(0, 2, 4, 1, 3, 5).reshape(n * dh * dw, c, hs - 1, ws - 1)
    return batch_to_space(y, dh, dw, h, w)


def _layout_mask(layout: str, h: int, w: int, dh: int, dw: int,
                 device) -> Optional[torch.Tensor]:
    """1 where a position of the rearranged layout is a real pixel of the
    ``h x w`` map, 0 on padding and gaps (None when there are none)."""
    if layout == 's2b' and h % dh == 0 and w % dw == 0:
        return None
    ones = torch.ones(1, 1, h, w, device=device)
    if layout == 's2b':
        return space_to_batch(ones, dh, dw)
    return space_to_mosaic(ones, dh, dw)


# --------------------------------------------------------------------------
# the convolution


def nnpack_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                groups: int = 1) -> torch.Tensor:
    """A 3x3 stride-1 padding-1 conv through NNPACK, groups split."""
    if groups == 1:
        return torch._nnpack_spatial_convolution(
            x.contiguous(), weight, bias, [1, 1], [1, 1])
    cin = x.shape[1] // groups
    cout = weight.shape[0] // groups
    return torch.cat([
        torch._nnpack_spatial_convolution(
            x[:, g * cin:(g + 1) * cin].contiguous(),
            weight[g * cout:(g + 1) * cout],
            bias[g * cout:(g + 1) * cout], [1, 1], [1, 1])
        for g in range(groups)], dim=1)


class WinogradConv2d(nn.Module):
    """A stride-1 3x3 ``nn.Conv2d`` with a choice of algorithm; same
    parameters, same function.

    ``method``:

    * ``'direct'``: ``F.conv2d`` as the original (oneDNN);
    * ``'nnpack'``: NNPACK Winograd (dilated: on the space-to-batch
      sub-grids, as one batch);
    * ``'nnpack_mosaic'`` (dilated only): NNPACK on the sub-grids tiled into
      one image with zero gaps (:func:`space_to_mosaic`): one batch-1 call,
      NNPACK's inference path, usually the fastest;
    * ``'direct_s2b'`` (dilated only): ``F.conv2d`` without dilation on the
      sub-grids (oneDNN's dilated kernels can be several times slower).

    Inputs other than fp32 CPU tensors always take the direct path.
    """

    DILATED_METHODS = ('direct', 'direct_s2b', 'nnpack', 'nnpack_mosaic')
    PLAIN_METHODS = ('direct', 'nnpack')

    def __init__(self, conv: nn.Conv2d, method: str = 'nnpack'):
        super().__init__()
        if not is_candidate(conv):
            raise ValueError(f'not a stride-1 3x3 fp32 conv with padding = '
                             f'dilation: {conv}')
        self.in_channels = conv.in_channels
        self.out_channels = conv.out_channels
        self.groups = conv.groups
        self.dilation = _pair(conv.dilation)
        self.weight = conv.weight
        if conv.bias is None:
            self.bias = nn.Parameter(torch.zeros(
                conv.out_channels, dtype=conv.weight.dtype,
                device=conv.weight.device), requires_grad=False)
        else:
            self.bias = conv.bias
        self.method = method

    @property
    def dilated(self) -> bool:
        return self.dilation != (1, 1)

    @property
    def methods(self) -> Tuple[str, ...]:
        return self.DILATED_METHODS if self.dilated else self.PLAIN_METHODS

    @property
    def layout(self) -> str:
        """Where the method computes: ``'dense'`` (the map as it is),
        ``'s2b'`` (space-to-batch sub-grids) or ``'mosaic'``."""
        if not self.dilated or self.method == 'direct':
            return 'dense'
        return 'mosaic' if self.method == 'nnpack_mosaic' else 's2b'

    def extra_repr(self) -> str:
        return (f'{self.in_channels}, {self.out_channels}, groups='
                f'{self.groups}, dilation={self.dilation}, '
                f'method={self.method}')

    def direct(self, x):
        return F.conv2d(x, self.weight, self.bias, 1, self.dilation,
                        self.dilation, self.groups)

    def rearranged(self, x):
        """The conv on a map already in this method's :attr:`layout`
        (an undilated 3x3, padding 1)."""
        if self.method == 'direct_s2b':
            return F.conv2d(x, self.weight, self.bias, 1, 1, 1, self.groups)
        return nnpack_conv(x, self.weight, self.bias, self.groups)

    def forward(self, x):
        if (self.method == 'direct' or x.dtype != torch.float32
                or x.device.type != 'cpu'):
            return self.direct(x)
        if not self.dilated:
            return nnpack_conv(x, self.weight, self.bias, self.groups)
        dh, dw = self.dilation
        h, w = x.shape[-2:]
        if self.layout == 'mosaic':
            out = self.rearranged(space_to_mosaic(x, dh, dw))
            return mosaic_to_space(out, dh, dw, h, w)
        out = self.rearranged(space_to_batch(x, dh, dw))
        return batch_to_space(out, dh, dw, h, w)


def plain_conv(module: nn.Module) -> Optional[nn.Module]:
    """The conv of a block that computes exactly ``relu(conv(x))``, as a
    block declares through its ``plain_conv`` attribute (a fused RepVGG
    block does, see :attr:`repvgg_seg.models.repvgg.RepVGGBlock.plain_conv`);
    ``None`` for anything else."""
    return getattr(module, 'plain_conv', None)


class DilatedRun(nn.Module):
    """Consecutive blocks computing ``relu(conv(x))`` (fused RepVGG blocks)
    with one dilation, computed inside one rearrangement (space-to-batch or
    mosaic) when all their convs use the same one; the padding and gaps are
    re-zeroed between the layers."""

    def __init__(self, blocks: Sequence[nn.Module]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.dilation = plain_conv(blocks[0]).dilation

    def forward(self, x):
        convs = [plain_conv(b) for b in self.blocks]
        layouts = {c.layout for c in convs}
        if (x.dtype != torch.float32 or x.device.type != 'cpu'
                or len(layouts) != 1 or 'dense' in layouts):
            for block in self.blocks:
                x = block(x)
            return x
        layout = layouts.pop()
        dh, dw = self.dilation
        h, w = x.shape[-2:]
        mask = _layout_mask(layout, h, w, dh, dw, x.device)
        if layout == 'mosaic':
            x = space_to_mosaic(x, dh, dw)
        else:
            x = space_to_batch(x, dh, dw)
        for i, conv in enumerate(convs):
            x = torch.relu_(conv.rearranged(x))
            if mask is not None and i < len(convs) - 1:
                x = x.mul_(mask)  # padding and gaps must stay zero
        if layout == 'mosaic':
            return mosaic_to_space(x, dh, dw, h, w)
        return batch_to_space(x, dh, dw, h, w)


# --------------------------------------------------------------------------
# conversion and the autotuned plan

_PLAN_CACHE: Dict[str, str] = {}
#: a JSON file keeping tuned plans across runs (for the benchmark's engine)
CACHE_ENV = 'REPVGG_SEG_WINOGRAD_CACHE'
#: part of every plan key; bumped when the methods change
_VERSION = 'v2'
#: whole-run alternatives to the per-conv plan (all convs of a run alike)
RUN_CHOICES = ('nnpack_mosaic', 'nnpack', 'direct_s2b')


def _shape_key(shape: Sequence[int]) -> str:
    return f'{"x".join(map(str, shape))}-t{torch.get_num_threads()}'


def _signature(conv: WinogradConv2d, shape: Sequence[int]) -> str:
    return (f'{_VERSION}:{conv.in_channels}-{conv.out_channels}-'
            f'g{conv.groups}-d{conv.dilation[0]}x{conv.dilation[1]}-'
            + _shape_key(shape))


def _time(fn, x, reps: int) -> float:
    fn(x)  # warm-up (NNPACK allocates, oneDNN creates its primitive)
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        fn(x)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def _tune_conv(name: str, conv: WinogradConv2d, shape, reps: int) -> bool:
    """Set ``conv.method`` to the fastest of its methods at ``shape``
    (cached); returns whether it was measured now."""
    key = _signature(conv, shape)
    measured = key not in _PLAN_CACHE or \
        _PLAN_CACHE[key] not in conv.methods
    if measured:
        x = torch.randn(*shape)
        timings = {}
        with torch.inference_mode():
            for candidate in conv.methods:
                conv.method = candidate
                timings[candidate] = _time(conv, x, reps)
        _PLAN_CACHE[key] = min(timings, key=timings.get)
        print_log(f'winograd plan: {name} {key}: ' + ', '.join(
            f'{m} {t * 1e3:.1f} ms' for m, t in timings.items())
            + f' -> {_PLAN_CACHE[key]}', logger='current')
    conv.method = _PLAN_CACHE[key]
    return measured


def _dilated_conv(module) -> Optional[WinogradConv2d]:
    """The converted dilated conv of a ``relu(conv(x))`` block, or None."""
    conv = plain_conv(module)
    if isinstance(conv, WinogradConv2d) and conv.dilation != (1, 1):
        return conv
    return None


def _group_dilated_runs(model: nn.Module,
                        shapes: Dict[str, Tuple[int, ...]]) -> List:
    """Wrap runs of >= 2 dilated fused RepVGG blocks of one ``Sequential``
    into :class:`DilatedRun`; returns ``[(name, run, input shape)]``."""
    found = []
    for parent_name, parent in list(model.named_modules()):
        if not isinstance(parent, nn.Sequential) or not parent_name:
            continue
        children = list(parent.named_children())
        runs, current = [], []
        for name, block in children:
            conv = _dilated_conv(block)
            if (conv is not None and current and
                    _dilated_conv(current[-1][1]).dilation == conv.dilation):
                current.append((name, block))
            else:
                if len(current) > 1:
                    runs.append(current)
                current = [(name, block)] if conv is not None else []
        if len(current) > 1:
            runs.append(current)
        if not runs:
            continue
        prefix = f'{parent_name}.'
        run_of = {run[0][0]: run for run in runs}
        skip = {name for run in runs for name, _ in run[1:]}
        new = OrderedDict()
        for name, block in children:
            if name in skip:
                continue
            if name in run_of:
                run = run_of[name]
                module = DilatedRun([b for _, b in run])
                key = f'{run[0][0]}-{run[-1][0]}'
                new[key] = module
                conv_name = next(n for n, m in block.named_modules()
                                 if m is plain_conv(block))
                found.append((prefix + key, module,
                              shapes.get(f'{prefix}{name}.{conv_name}')))
            else:
                new[name] = block
        # a new Sequential in the parent's place (the keys of a run change)
        owner_name, _, attr = parent_name.rpartition('.')
        owner = model.get_submodule(owner_name) if owner_name else model
        setattr(owner, attr, nn.Sequential(new))
    return found


def _tune_run(name: str, run: DilatedRun, shape, reps: int) -> bool:
    """Time a run with its per-conv plan and with each of
    :data:`RUN_CHOICES` for all its convs; keep the fastest (cached).
    Returns whether it was measured now."""
    convs = [plain_conv(b) for b in run.blocks]
    key = (f'{_VERSION}:run-' + '-'.join(
        f'{c.in_channels}.{c.out_channels}.g{c.groups}' for c in convs)
        + f'-d{convs[0].dilation[0]}x{convs[0].dilation[1]}-'
        + _shape_key(shape))
    per_conv = [c.method for c in convs]
    measured = key not in _PLAN_CACHE
    if measured:
        x = torch.randn(*shape)
        timings = {}
        with torch.inference_mode():
            for choice in ('plan', ) + RUN_CHOICES:
                for conv, method in zip(convs, per_conv):
                    conv.method = method if choice == 'plan' else choice
                timings[choice] = _time(run, x, reps)
        _PLAN_CACHE[key] = min(timings, key=timings.get)
        print_log(f'winograd plan: run {name} ({len(convs)} blocks): '
                  + ', '.join(f'{m} {t * 1e3:.1f} ms'
                              for m, t in timings.items())
                  + f' -> {_PLAN_CACHE[key]}', logger='current')
    choice = _PLAN_CACHE[key]
    for conv, method in zip(convs, per_conv):
        conv.method = method if choice == 'plan' else choice
    return measured


def convert_to_winograd(model: nn.Module,
                        input_shape: Sequence[int],
                        tune: bool = True,
                        reps: int = 2,
                        group_runs: bool = True,
                        cache_file: Optional[str] = None,
                        check: bool = True,
                        tolerance: float = 1e-4) -> dict:
    """Swap the eligible convs of ``model`` (in place, fp32, CPU, eval) for
    :class:`WinogradConv2d` and choose each one's method.

    Args:
        input_shape: the ``N x 3 x H x W`` input the plan is tuned for.
        tune: time each conv with each of its methods (see
            :class:`WinogradConv2d`) at its input shape and keep the fastest,
            then each run of dilated blocks with that plan and with one
            method for all its convs (:data:`RUN_CHOICES`); without it every
            eligible conv uses NNPACK (``'nnpack_mosaic'`` when dilated).
        reps: timed repetitions per candidate (after one warm-up).
        group_runs: compute runs of dilated RepVGG blocks in one
            rearrangement (:class:`DilatedRun`).
        cache_file: a JSON file that keeps the tuned choices across runs.
        check: compare the converted model's output with the original's on
            a random input and raise if the relative error exceeds
            ``tolerance``.

    Returns:
        a report: ``{'convs', 'nnpack', 'direct', 'runs', 'max_rel_error',
        'plan': {name: method}}``.
    """
    require_nnpack()
    model.eval()
    gen = torch.Generator().manual_seed(0)
    sample = torch.randn(*input_shape, generator=gen)
    reference = None
    if check:
        with torch.inference_mode():
            reference = model(sample)

    # the input shape of every candidate conv, from one forward
    shapes: Dict[str, Tuple[int, ...]] = {}

    def recorder(name):
        def hook(module, args):
            shapes.setdefault(name, tuple(args[0].shape))
        return hook

    hooks = [module.register_forward_pre_hook(recorder(name))
             for name, module in model.named_modules()
             if is_candidate(module)]
    with torch.inference_mode():
        model(sample)
    for hook in hooks:
        hook.remove()

    if cache_file and osp.isfile(cache_file):
        with open(cache_file) as f:
            _PLAN_CACHE.update(json.load(f))
    measured = 0
    for name, shape in shapes.items():
        parent_name, _, attr = name.rpartition('.')
        parent = model.get_submodule(parent_name) if parent_name else model
        conv = WinogradConv2d(getattr(parent, attr))
        setattr(parent, attr, conv)
        conv.method = 'nnpack_mosaic' if conv.dilated else 'nnpack'
        if tune:
            measured += _tune_conv(name, conv, shape, reps)
    runs = _group_dilated_runs(model, shapes) if group_runs else []
    if tune:
        for run_name, run, shape in runs:
            if shape is not None:
                measured += _tune_run(run_name, run, shape, reps)
    if cache_file and measured:
        write_json(_PLAN_CACHE, cache_file, indent=1, sort_keys=True)
    plan = {name: module.method for name, module in model.named_modules()
            if isinstance(module, WinogradConv2d)}

    report = dict(convs=len(plan),
                  nnpack=sum(m.startswith('nnpack') for m in plan.values()),
                  direct=sum(m.startswith('direct') for m in plan.values()),
                  runs=len(runs), plan=plan, max_rel_error=None)
    if check:
        with torch.inference_mode():
            out = model(sample)
        report['max_rel_error'] = compare_outputs(
            flatten_tensors(reference), flatten_tensors(out))['max_rel_diff']
        if report['max_rel_error'] > tolerance:
            raise VerificationError(
                f'the Winograd model differs from the direct convolution: '
                f'max relative error {report["max_rel_error"]:.3g} > '
                f'{tolerance:g}')
    print_log(f'winograd engine: {report["nnpack"]} of {report["convs"]} '
              f'stride-1 3x3 convs on NNPACK, {len(runs)} runs of dilated '
              'blocks grouped' + (
                  f'; max relative error vs direct '
                  f'{report["max_rel_error"]:.2g}' if check else ''),
              logger='current')
    return report


def winograd_runner(module: nn.Module, input_shape: Sequence[int],
                    channels_last: bool = False, **kwargs):
    """A benchmark runner (see :mod:`repvgg_seg.bench`): a converted
    copy of ``module`` called under ``inference_mode``. The tuned plan is
    kept in the JSON file named by ``$REPVGG_SEG_WINOGRAD_CACHE``, if set."""
    if channels_last:
        raise InputError('the winograd engine runs NCHW (NNPACK); drop '
                         '--channels-last')
    kwargs.setdefault('cache_file', os.environ.get(CACHE_ENV) or None)
    converted = copy.deepcopy(module).cpu().eval()
    convert_to_winograd(converted, input_shape, **kwargs)

    def run(x):
        with torch.inference_mode():
            return converted(x.cpu())

    return run
