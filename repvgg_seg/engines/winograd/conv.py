"""NNPACK's availability and :class:`WinogradConv2d`, a stride-1 3x3 conv
with a choice of algorithm (direct, NNPACK Winograd, on the dense map or on
its dilation sub-grids)."""
import functools
from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...errors import InputError, UnavailableError
from .layout import (batch_to_space, mosaic_to_space, space_to_batch,
                     space_to_mosaic)


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


def nnpack_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                groups: int = 1) -> torch.Tensor:
    """A 3x3 stride-1 padding-1 conv through NNPACK, groups split (NNPACK
    has no groups)."""
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

    Raises:
        InputError: ``conv`` is not a stride-1 3x3 fp32 conv with zero
            padding equal to its dilation (:func:`is_candidate`).
    """

    DILATED_METHODS = ('direct', 'direct_s2b', 'nnpack', 'nnpack_mosaic')
    PLAIN_METHODS = ('direct', 'nnpack')

    def __init__(self, conv: nn.Conv2d, method: str = 'nnpack'):
        super().__init__()
        if not is_candidate(conv):
            raise InputError(f'not a stride-1 3x3 fp32 conv with padding = '
                             f'dilation: {conv}')
        self.in_channels = conv.in_channels
        self.out_channels = conv.out_channels
        self.groups = conv.groups
        self.dilation = _pair(conv.dilation)
        self.weight = conv.weight
        if conv.bias is None:
            # NNPACK's kernel takes a bias tensor
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
