"""The structural re-parameterization math of RepVGG (paper, Sect. 3.3).

This module is the single place where a training-time RepVGG block (3x3
conv+BN, 1x1 conv+BN, identity BN) becomes one 3x3 conv with bias. Every path
goes through :func:`fuse_branches`: the block's ``switch_to_deploy`` and its
differentiable ``get_equivalent_kernel_bias``, whole-model conversion,
state-dict (checkpoint) conversion and export.

The functions work on plain tensors, not modules, so that a checkpoint can be
converted without building a model and so that gradients flow through them
(useful for a custom L2 on the equivalent kernel, or for QAT).
"""
from typing import NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError


class BNParams(NamedTuple):
    """The statistics and affine parameters of one batch-norm layer.

    ``eps`` is taken from each layer (never a constant): checkpoints trained
    with another eps would otherwise convert with a small, silent error.
    """
    running_mean: Tensor
    running_var: Tensor
    weight: Optional[Tensor]
    bias: Optional[Tensor]
    eps: float

    @classmethod
    def from_module(cls, bn) -> 'BNParams':
        """Read a ``_BatchNorm`` (BN, SyncBN, ...) layer's running statistics.

        The running statistics are used whatever the module's train/eval mode
        is: the fused conv is what the model computes in eval mode.
        """
        if bn.running_mean is None or bn.running_var is None:
            raise ConfigError(
                f'{type(bn).__name__} has track_running_stats=False; a '
                'RepVGG branch can only be fused with running statistics.')
        return cls(bn.running_mean, bn.running_var, bn.weight, bn.bias,
                   float(bn.eps))

    @classmethod
    def from_state_dict(cls, state: dict, prefix: str,
                        eps: float = 1e-5) -> 'BNParams':
        """Read ``{prefix}running_mean`` etc. from a state dict.

        Checkpoints do not store eps; torch's default (1e-5) is what both the
        official code and this project use.
        """
        return cls(state[prefix + 'running_mean'],
                   state[prefix + 'running_var'],
                   state.get(prefix + 'weight'), state.get(prefix + 'bias'),
                   eps)


def fuse_conv_bn_tensors(kernel: Optional[Tensor],
                         bn: BNParams) -> Tuple[Tensor, Tensor]:
    """Fold BN into the preceding bias-free conv (the paper's Eq. 3).

    ``kernel=None`` is not allowed here; use :func:`identity_kernel` for the
    identity branch.
    """
    std = (bn.running_var + bn.eps).sqrt()
    gamma = bn.weight if bn.weight is not None else torch.ones_like(std)
    beta = bn.bias if bn.bias is not None else torch.zeros_like(std)
    scale = gamma / std
    return kernel * scale.reshape(-1, 1, 1, 1), beta - bn.running_mean * scale


def identity_kernel(channels: int, groups: int, kernel_size: int,
                    like: Tensor) -> Tensor:
    """A (grouped) conv kernel that computes the identity.

    Output channel ``i`` reads input channel ``i % (channels // groups)`` of
    its own group, which is where the 1 goes for grouped convs.
    """
    in_per_group = channels // groups
    kernel = torch.zeros(channels, in_per_group, kernel_size, kernel_size,
                         dtype=like.dtype, device=like.device)
    centre = kernel_size // 2
    idx = torch.arange(channels, device=like.device)
    kernel[idx, idx % in_per_group, centre, centre] = 1
    return kernel


def pad_kernel_to(kernel: Tensor, kernel_size: int) -> Tensor:
    """Zero-pad a smaller (1x1) kernel to the centre of a kxk one.

    The centre tap of a dilated 3x3 conv reads offset 0 whatever the dilation,
    so a centred 1x1 stays exact under dilation.
    """
    pad = (kernel_size - kernel.shape[-1]) // 2
    return F.pad(kernel, [pad] * 4)


def fuse_branches(dense: Tuple[Tensor, BNParams],
                  one_by_one: Optional[Tuple[Tensor, BNParams]],
                  identity: Optional[BNParams],
                  groups: int) -> Tuple[Tensor, Tensor]:
    """The equivalent kernel and bias of a whole RepVGG block.

    Args:
        dense: the 3x3 branch (kernel, BN).
        one_by_one: the 1x1 branch (kernel, BN), or None if absent.
        identity: the identity branch's BN, or None if absent.
        groups: the groups of the block's convs.

    Returns:
        ``(kernel, bias)`` of the single kxk conv that computes the sum of the
        branches (before the non-linearity).
    """
    dense_kernel, dense_bn = dense
    size = dense_kernel.shape[-1]
    kernel, bias = fuse_conv_bn_tensors(dense_kernel, dense_bn)
    if one_by_one is not None:
        k1, b1 = fuse_conv_bn_tensors(*one_by_one)
        kernel = kernel + pad_kernel_to(k1, size)
        bias = bias + b1
    if identity is not None:
        channels = identity.running_mean.shape[0]
        kid, bid = fuse_conv_bn_tensors(
            identity_kernel(channels, groups, size, dense_kernel), identity)
        kernel = kernel + kid
        bias = bias + bid
    return kernel, bias


def fuse_block_state_dict(state: dict, prefix: str, groups: int,
                          eps: float = 1e-5) -> Tuple[Tensor, Tensor]:
    """Fuse one training-time block stored in a state dict.

    Uses the official key names (``rbr_dense``, ``rbr_1x1``, ``rbr_identity``)
    that this project's modules share.
    """
    dense = (state[prefix + 'rbr_dense.conv.weight'],
             BNParams.from_state_dict(state, prefix + 'rbr_dense.bn.', eps))
    one_by_one = None
    if prefix + 'rbr_1x1.conv.weight' in state:
        one_by_one = (state[prefix + 'rbr_1x1.conv.weight'],
                      BNParams.from_state_dict(state, prefix + 'rbr_1x1.bn.',
                                               eps))
    identity = None
    if prefix + 'rbr_identity.running_mean' in state:
        identity = BNParams.from_state_dict(state, prefix + 'rbr_identity.',
                                            eps)
    return fuse_branches(dense, one_by_one, identity, groups)
