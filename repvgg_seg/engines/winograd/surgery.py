"""Model surgery for the Winograd engine: candidate convs swapped for
:class:`WinogradConv2d`, and runs of dilated ``relu(conv(x))`` blocks of a
``Sequential`` grouped into one :class:`DilatedRun`."""
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from .conv import WinogradConv2d
from .layout import (batch_to_space, layout_mask, mosaic_to_space,
                     space_to_batch, space_to_mosaic)


def plain_conv(module: nn.Module) -> Optional[nn.Module]:
    """The conv of a block that computes exactly ``relu(conv(x))``, as a
    block declares through its ``plain_conv`` attribute (a fused RepVGG
    block does, see :attr:`repvgg_seg.models.blocks.RepVGGBlock.plain_conv`);
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
        mask = layout_mask(layout, h, w, dh, dw, x.device)
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


def swap_convs(model: nn.Module,
               names: Sequence[str]) -> Dict[str, WinogradConv2d]:
    """Replace each named ``nn.Conv2d`` of ``model`` by a
    :class:`WinogradConv2d` (NNPACK, ``'nnpack_mosaic'`` when dilated);
    returns ``{name: new conv}``."""
    swapped = {}
    for name in names:
        parent_name, _, attr = name.rpartition('.')
        parent = model.get_submodule(parent_name) if parent_name else model
        conv = WinogradConv2d(getattr(parent, attr))
        conv.method = 'nnpack_mosaic' if conv.dilated else 'nnpack'
        setattr(parent, attr, conv)
        swapped[name] = conv
    return swapped


def _dilated_conv(module) -> Optional[WinogradConv2d]:
    """The converted dilated conv of a ``relu(conv(x))`` block, or None."""
    conv = plain_conv(module)
    if isinstance(conv, WinogradConv2d) and conv.dilated:
        return conv
    return None


def _runs_of(children) -> List[List[Tuple[str, nn.Module]]]:
    """The runs of >= 2 consecutive children with one dilated conv each,
    all of the same dilation."""
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
    return runs


def group_dilated_runs(model: nn.Module,
                       shapes: Dict[str, Tuple[int, ...]]) -> List:
    """Wrap runs of >= 2 dilated fused RepVGG blocks of one ``Sequential``
    into :class:`DilatedRun`; returns ``[(name, run, input shape)]`` (the
    shape from ``shapes``, keyed by conv name; None if not recorded)."""
    found = []
    for parent_name, parent in list(model.named_modules()):
        if not isinstance(parent, nn.Sequential) or not parent_name:
            continue
        children = list(parent.named_children())
        runs = _runs_of(children)
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
