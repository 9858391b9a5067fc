"""Parameters, FLOPs and Winograd multiplications (the paper's Table 4).

Counting conventions
--------------------
* ``flops`` are **multiply-adds** (MACs), as the paper counts them and as
  mmengine's :class:`~mmengine.analysis.FlopAnalyzer` reports them (one
  "flop" per multiply-add for conv and linear; the handful of other ops it
  knows, e.g. adaptive pooling and bilinear upsampling, are counted per
  output/input element). The benchmark's achieved GFLOP/s uses 2 FLOPs per
  MAC.
* ``wino_muls``: the paper's "Wino MULs" -- every stride-1 3x3 conv is
  counted at 4/9 of its multiplications (Winograd F(2x2, 3x3) needs 16
  multiplications per 2x2 output tile instead of 36), everything else at its
  MACs. Grouped and dilated stride-1 3x3 convs count at 4/9 too (a dilated
  3x3 is an ordinary 3x3 on each of the dilation x dilation sub-grids).
* ``params``: the parameters of the modules the forward actually uses (a
  segmentor's auxiliary head, unused at test time, is not counted;
  ``params_all`` includes it).

The paper's rounding
--------------------
Table 4 prints FLOPs and Wino MULs in billions **rounded to nearest at one
decimal, once, from the exact count** -- e.g. A0's Wino MULs are
0.747 B: 0.75 at two decimals, but the table's 0.7 is the one-step rounding
of 0.747 (rounding the two-decimal 0.75 again would give 0.8, and truncation
would turn A1's 2.364 B FLOPs into 2.3 instead of the printed 2.4). Its
parameter counts (millions, two decimals) are the exact counts **truncated**
(A0: 8,309,384 -> 8.30; to nearest would give 8.31); every listed arch agrees
with these two rules (see :data:`PAPER_TABLE4` and the tests).
"""
import decimal
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import print_log

from ..apis.build import (LogitsModule, build_model, checked_shape,
                          default_input_shape, is_segmentor)
from ..errors import InputError
from ..models import ARCH_SETTINGS, RepVGG
from ..models.convert import fuse_for_deploy

#: the paper's Table 4: arch -> (params M, FLOPs B, Wino MULs B), as printed
PAPER_TABLE4: Dict[str, Tuple[float, float, float]] = {
    'A0': (8.30, 1.4, 0.7),
    'A1': (12.78, 2.4, 1.3),
    'B0': (14.33, 3.1, 1.6),
    'A2': (25.49, 5.1, 2.7),
    'B1g4': (36.12, 7.3, 3.9),
    'B1g2': (41.36, 8.8, 4.6),
    'B1': (51.82, 11.8, 5.9),
    'B2g4': (55.77, 11.3, 6.0),
    'B2': (80.31, 18.4, 9.1),
    'B3g4': (75.62, 16.1, 8.4),
    'B3': (110.96, 26.2, 12.9),
}

WINOGRAD_FACTOR = 4 / 9


def paper_round(count: int, unit: float = 1e9, decimals: int = 1) -> float:
    """``count / unit`` rounded half-up at ``decimals``, once (FLOPs)."""
    value = decimal.Decimal(int(count)) / decimal.Decimal(unit)
    quantum = decimal.Decimal(1).scaleb(-decimals)
    return float(value.quantize(quantum, rounding=decimal.ROUND_HALF_UP))


def paper_truncate(count: int, unit: float = 1e6, decimals: int = 2) -> float:
    """``count / unit`` truncated at ``decimals`` (the paper's params)."""
    value = decimal.Decimal(int(count)) / decimal.Decimal(unit)
    quantum = decimal.Decimal(1).scaleb(-decimals)
    return float(value.quantize(quantum, rounding=decimal.ROUND_DOWN))


def is_winograd_conv(module: nn.Module) -> bool:
    """A stride-1 3x3 conv (any groups, any dilation)."""
    return (isinstance(module, nn.Conv2d)
            and tuple(module.kernel_size) == (3, 3)
            and tuple(module.stride) == (1, 1))


def _param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def analyze(model: nn.Module, inputs: Union[torch.Tensor, tuple]) -> dict:
    """Params, FLOPs (MACs) and Wino MULs of one test-mode forward of
    ``model`` (which is left in eval mode).

    Uses mmengine's FlopAnalyzer (a jit trace of one forward); the Winograd
    rule is applied to its per-module breakdown.
    """
    from mmengine.analysis import FlopAnalyzer
    if isinstance(inputs, torch.Tensor):
        inputs = (inputs, )
    model.eval()  # test-mode forward (and it stays in eval mode)
    with torch.no_grad():
        analyzer = FlopAnalyzer(model, inputs)
        analyzer.unsupported_ops_warnings(False)
        analyzer.uncalled_modules_warnings(False)
        analyzer.tracer_warnings('none')
        total = int(analyzer.total())
        by_module = analyzer.by_module()
        uncalled = analyzer.uncalled_modules()
    wino_convs = 0
    for name, module in model.named_modules():
        if is_winograd_conv(module) and name in by_module:
            wino_convs += int(by_module[name])
    wino = total - wino_convs + wino_convs * WINOGRAD_FACTOR
    # parameters of modules the forward never called (outermost only)
    unused = 0
    for name in sorted(uncalled):
        parent = name.rsplit('.', 1)[0] if '.' in name else ''
        if parent and parent in uncalled:
            continue
        unused += _param_count(model.get_submodule(name))
    params_all = _param_count(model)
    return dict(params=params_all - unused, params_all=params_all,
                flops=total, wino_muls=int(round(wino)),
                winograd_conv_flops=wino_convs,
                by_operator={k: int(v) for k, v in
                             analyzer.by_operator().items()})


class RepVGGClassifier(nn.Module):
    """The ImageNet classifier of Table 4 in deploy form: RepVGG backbone,
    global average pool, a ``num_classes`` linear layer."""

    def __init__(self, arch: str, num_classes: int = 1000,
                 deploy: bool = True):
        super().__init__()
        self.backbone = RepVGG(arch, deploy=deploy, out_indices=(4, ))
        self.head = nn.Linear(self.backbone.out_channels[-1], num_classes)

    def forward(self, x):
        x = self.backbone(x)[-1]
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def arch_complexity(arch: str, shape: Sequence[int] = (224, 224),
                    num_classes: int = 1000) -> dict:
    """Table 4's numbers for a RepVGG arch (deploy form, ImageNet head)."""
    with torch.device('meta'):
        model = RepVGGClassifier(arch, num_classes)
    # counting needs one real forward, not real weights: skip the init
    model = model.to_empty(device='cpu')
    for tensor in model.parameters():
        tensor.data.zero_()
    result = analyze(model, torch.zeros(1, 3, *shape))
    result.update(arch=arch, shape=list(shape), kind='classifier')
    if arch in PAPER_TABLE4:
        result['paper'] = dict(zip(('params_m', 'flops_b', 'wino_muls_b'),
                                   PAPER_TABLE4[arch]))
    return result


def model_complexity(model: nn.Module,
                     shape: Optional[Sequence[int]] = None,
                     batch_size: int = 1) -> dict:
    """Complexity of a built model's test-mode forward (a segmentor's logits
    at the input size, see :class:`repvgg_seg.apis.build.LogitsModule`)."""
    shape = checked_shape(shape, default_input_shape(model))
    wrapped = model if isinstance(model, LogitsModule) \
        else LogitsModule(model)
    device = next(model.parameters()).device
    result = analyze(wrapped, torch.zeros(batch_size, 3, *shape,
                                          device=device))
    result.update(shape=list(shape), batch_size=batch_size)
    return result


def config_complexity(config, shape: Optional[Sequence[int]] = None,
                      fused: bool = True,
                      cfg_options: Optional[dict] = None) -> dict:
    """Complexity of a config's model (random weights), fused for deployment
    by default (713x713 for a segmentor, 224x224 for a classifier)."""
    model = build_model(config, cfg_options=cfg_options)
    if fused:
        fuse_for_deploy(model)
    result = model_complexity(model, shape)
    result.update(config=str(config), fused=fused,
                  kind='segmentor' if is_segmentor(model) else 'classifier')
    print_log(f'{config}: {result["params"] / 1e6:.2f} M params, '
              f'{result["flops"] / 1e9:.2f} GMACs at '
              f'{result["shape"][0]}x{result["shape"][1]}', logger='current')
    return result


def complexity(arch_or_config: str, shape: Optional[Sequence[int]] = None,
               fused: bool = True, cfg_options: Optional[dict] = None) -> dict:
    """:func:`arch_complexity` for an arch name, :func:`config_complexity`
    for a config file."""
    if arch_or_config in ARCH_SETTINGS:
        return arch_complexity(arch_or_config, shape or (224, 224))
    if not arch_or_config.endswith('.py'):
        raise InputError(f'{arch_or_config!r} is neither a RepVGG arch '
                         f'({", ".join(ARCH_SETTINGS)}) nor a config file')
    return config_complexity(arch_or_config, shape, fused, cfg_options)


def format_complexity(result: dict) -> str:
    """A readable summary, with the paper's rounding."""
    lines = []
    name = result.get('arch') or result.get('config')
    shape = result['shape']
    lines.append(f'{name} ({result.get("kind", "model")}, input '
                 f'{shape[0]}x{shape[1]}'
                 + (', fused' if result.get('fused', True) else ', unfused')
                 + ')')
    lines.append(f'  params:    {result["params"]:>16,d}  '
                 f'({result["params"] / 1e6:.3f} M; paper style '
                 f'{paper_truncate(result["params"]):.2f} M)')
    lines.append(f'  FLOPs:     {result["flops"]:>16,d}  '
                 f'({result["flops"] / 1e9:.3f} B multiply-adds; paper style '
                 f'{paper_round(result["flops"]):.1f} B)')
    lines.append(f'  Wino MULs: {result["wino_muls"]:>16,d}  '
                 f'({result["wino_muls"] / 1e9:.3f} B; paper style '
                 f'{paper_round(result["wino_muls"]):.1f} B)')
    if result.get('params_all', result['params']) != result['params']:
        lines.append(f'  (all params incl. modules unused at test time: '
                     f'{result["params_all"]:,d})')
    if 'paper' in result:
        p = result['paper']
        lines.append(f'  paper Table 4: {p["params_m"]:.2f} M, '
                     f'{p["flops_b"]:.1f} B FLOPs, {p["wino_muls_b"]:.1f} B '
                     'Wino MULs')
    return '\n'.join(lines)
