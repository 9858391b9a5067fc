"""The rearrangements that turn a dilated 3x3 conv into an ordinary one.

A 3x3 conv with dilation ``d`` (padding ``d``) computes an ordinary 3x3 conv
(padding 1) on each of the ``d x d`` sub-grids of its input. The sub-grids
are laid out either as a batch (:func:`space_to_batch`) or tiled into one
image with zero gaps (:func:`space_to_mosaic`); each has its exact inverse.
"""
from typing import Optional

import torch
import torch.nn.functional as F


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


def layout_mask(layout: str, h: int, w: int, dh: int, dw: int,
                device) -> Optional[torch.Tensor]:
    """1 where a position of the rearranged layout (``'s2b'`` or
    ``'mosaic'``) is a real pixel of the ``h x w`` map, 0 on padding and
    gaps (None when there are none)."""
    if layout == 's2b' and h % dh == 0 and w % dw == 0:
        return None
    ones = torch.ones(1, 1, h, w, device=device)
    if layout == 's2b':
        return space_to_batch(ones, dh, dw)
    return space_to_mosaic(ones, dh, dw)
