"""The structural re-parameterization math of RepVGG (paper, Sect. 3.3).

This module is the single place where a training-time block becomes one 3x3
conv with bias, for both block types:

* RepVGG (3x3 conv+BN, 1x1 conv+BN, identity BN): :func:`fuse_branches`;
* QARepVGG (Chu et al., "Make RepVGG Greater Again: A Quantization-aware
  Approach": 3x3 conv+BN, a plain 1x1 conv, a plain identity, one BN after
  the sum): :func:`fuse_qa_branches`.

Every path goes through them: the blocks' ``switch_to_deploy`` and their
differentiable ``get_equivalent_kernel_bias``, whole-model conversion,
state-dict (checkpoint) conversion (:func:`fuse_block_state_dict`) and
export.

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


def fuse_conv_bn_tensors(kernel: Tensor, bn: BNParams,
                         bias: Optional[Tensor] = None
                         ) -> Tuple[Tensor, Tensor]:
    """Fold BN into the preceding conv (the paper's Eq. 3).

    ``bias`` is the conv's own bias (``None``: a bias-free conv, as in every
    RepVGG branch). With a bias this also folds QARepVGG's post-sum BN onto
    the already summed kernel and bias. Use :func:`identity_kernel` for an
    identity branch.
    """
    std = (bn.running_var + bn.eps).sqrt()
    gamma = bn.weight if bn.weight is not None else torch.ones_like(std)
    beta = bn.bias if bn.bias is not None else torch.zeros_like(std)
    scale = gamma / std
    mean = bn.running_mean if bias is None else bn.running_mean - bias
    return kernel * scale.reshape(-1, 1, 1, 1), beta - mean * scale


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


def fuse_qa_branches(dense: Tuple[Tensor, BNParams],
                     one_by_one: Optional[Tuple[Tensor, Optional[Tensor]]],
                     has_identity: bool,
                     post_bn: BNParams,
                     groups: int) -> Tuple[Tensor, Tensor]:
    """The equivalent kernel and bias of a whole QARepVGG block.

    The 3x3 branch's BN is folded first; the 1x1 branch (a plain conv, no
    BN, so nothing to fold) is padded to 3x3 and added, as is the identity
    (no BN either); then the BN that follows the sum is folded onto the
    summed kernel and bias. No per-branch BN scales the 1x1 and identity
    branches, which is what keeps the fused kernel's value range (and thus
    its INT8 quantization error) small.

    Args:
        dense: the 3x3 branch (kernel, BN).
        one_by_one: the 1x1 branch (kernel, bias or None), or None if absent.
        has_identity: whether the block has an identity branch.
        post_bn: the BN after the sum of the branches.
        groups: the groups of the block's convs.

    Returns:
        ``(kernel, bias)`` of the single kxk conv that computes the post-sum
        BN's output (before the non-linearity).
    """
    dense_kernel, dense_bn = dense
    size = dense_kernel.shape[-1]
    kernel, bias = fuse_conv_bn_tensors(dense_kernel, dense_bn)
    if one_by_one is not None:
        k1, b1 = one_by_one
        kernel = kernel + pad_kernel_to(k1, size)
        if b1 is not None:
            bias = bias + b1
    if has_identity:
        kernel = kernel + identity_kernel(kernel.shape[0], groups, size,
                                          dense_kernel)
    return fuse_conv_bn_tensors(kernel, post_bn, bias)


def is_qa_block_state(state: dict, prefix: str) -> bool:
    """Whether the block stored under ``prefix`` is a training-time QARepVGG
    block: only it has a BN after the sum (``{prefix}bn.``)."""
    return prefix + 'bn.running_mean' in state


def fuse_block_state_dict(state: dict, prefix: str, groups: int,
                          eps: float = 1e-5,
                          has_identity: Optional[bool] = None
                          ) -> Tuple[Tensor, Tensor]:
    """Fuse one training-time block (RepVGG or QARepVGG) of a state dict.

    Uses the official key names (``rbr_dense``, ``rbr_1x1``, ``rbr_identity``)
    that this project's modules share; a QARepVGG block is recognised by its
    post-sum BN (``bn.``) and has its plain 1x1 conv at ``rbr_1x1.weight``.
    Its identity branch has no parameters, so ``has_identity`` must be given
    for it (a RepVGG block's identity BN is found from the keys).
    """
    if is_qa_block_state(state, prefix):
        if has_identity is None:
            raise ConfigError('fusing a QARepVGG block from a state dict '
                              'needs has_identity (its identity branch has '
                              'no parameters)')
        dense = (state[prefix + 'rbr_dense.conv.weight'],
                 BNParams.from_state_dict(state, prefix + 'rbr_dense.bn.',
                                          eps))
        one_by_one = None
        if prefix + 'rbr_1x1.weight' in state:
            one_by_one = (state[prefix + 'rbr_1x1.weight'],
                          state.get(prefix + 'rbr_1x1.bias'))
        return fuse_qa_branches(
            dense, one_by_one, has_identity,
            BNParams.from_state_dict(state, prefix + 'bn.', eps), groups)
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
