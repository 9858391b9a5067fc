"""The blocks of the RepVGG backbone: the paper's RepVGG block, the QARepVGG
block (Chu et al., "Make RepVGG Greater Again: A Quantization-aware
Approach") and D2se's squeeze-and-excitation.

Module and parameter names follow the official implementation
(``rbr_dense.conv.weight``, ``rbr_1x1``, ``rbr_identity``, ``rbr_reparam``,
``se.down``), so the official checkpoints load without renaming. Both
blocks fuse, through :mod:`.reparam`, into the same plain 3x3 conv, so
their deploy models are interchangeable.
"""
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmcv.cnn import ConvModule, build_activation_layer, build_norm_layer
from mmengine.model import BaseModule

from ..errors import ConfigError
from .reparam import BNParams, fuse_branches, fuse_qa_branches


def _build_act(act_cfg: Optional[dict]) -> nn.Module:
    """The block's non-linearity; ``None`` means none (mmcv's convention).
    In-place where the activation supports it, as mmcv's ConvModule does:
    its input is always a fresh tensor (a sum, a conv or an SE output)."""
    if act_cfg is None:
        return nn.Identity()
    if not isinstance(act_cfg, dict) or 'type' not in act_cfg:
        raise ConfigError(f'act_cfg must be None or a dict with a type, got '
                          f'{act_cfg!r}')
    cfg = dict(act_cfg)
    if cfg['type'] not in ('Tanh', 'PReLU', 'Sigmoid', 'HSigmoid', 'Swish',
                           'GELU', 'SiLU'):
        cfg.setdefault('inplace', True)
    try:
        return build_activation_layer(cfg)
    except KeyError as err:
        raise ConfigError(f'unknown activation in act_cfg {act_cfg!r}: '
                          f'{err}') from None


class SEBlock(nn.Module):
    """Squeeze-and-excitation as in the official D2se (names ``down``/``up``).

    It acts on the block's summed output, so it survives re-parameterization
    unchanged and still runs in deploy mode.
    """

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.down = nn.Conv2d(channels, hidden, 1, bias=True)
        self.up = nn.Conv2d(hidden, channels, 1, bias=True)

    def forward(self, x):
        # adaptive pooling, not the official avg_pool2d(kernel=width), which
        # is only a global pool for square inputs.
        w = F.adaptive_avg_pool2d(x, 1)
        w = torch.sigmoid(self.up(F.relu(self.down(w))))
        return x * w


class RepVGGBlock(BaseModule):
    """A RepVGG block: 3x3 conv+BN, 1x1 conv+BN and identity BN, summed, ReLU.

    After :meth:`switch_to_deploy` (or when built with ``deploy=True``) it is
    one 3x3 conv with bias followed by ReLU.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        stride (int): Stride of the 3x3 and 1x1 convs. Defaults to 1.
        dilation (int): Dilation of the 3x3 conv (padding equals dilation,
            so the spatial size is kept); the 1x1 branch is never dilated.
            Defaults to 1.
        groups (int): Groups of both convs. Defaults to 1.
        has_identity (bool, optional): Whether there is an identity BN
            branch; ``None`` means "when in and out channels match and
            stride is 1". The backbone passes it explicitly so that a
            dilation mode, which changes strides, never changes the
            parameters. Defaults to None.
        use_se (bool): Squeeze-and-excitation after the sum (D2se).
            Defaults to False.
        deploy (bool): Build the fused form directly. Defaults to False.
        norm_cfg (dict): Config of the BN layers (BN, SyncBN, ...).
            Defaults to ``dict(type='BN')``.
        act_cfg (dict, optional): The non-linearity after the sum; ``None``
            for none. Defaults to ``dict(type='ReLU')``.
        with_cp (bool): Gradient checkpointing of this block. Defaults to
            False.
        init_cfg (dict or list[dict], optional): Initialization config.
            Defaults to None.
    """

    block_type = 'repvgg'
    # the modules that switch_to_deploy replaces by ``rbr_reparam``
    _branch_names = ('rbr_dense', 'rbr_1x1', 'rbr_identity')

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 stride: int = 1,
                 dilation: int = 1,
                 groups: int = 1,
                 has_identity: Optional[bool] = None,
                 use_se: bool = False,
                 deploy: bool = False,
                 norm_cfg: dict = dict(type='BN'),
                 act_cfg: Optional[dict] = dict(type='ReLU'),
                 with_cp: bool = False,
                 init_cfg=None):
        super().__init__(init_cfg)
        if has_identity is None:
            has_identity = in_channels == out_channels and stride == 1
        if has_identity and in_channels != out_channels:
            raise ConfigError('an identity branch needs in_channels == '
                              f'out_channels, got {in_channels} and '
                              f'{out_channels}')
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        self.dilation = dilation
        self.groups = groups
        self.has_identity = has_identity
        self.deploy = deploy
        self.with_cp = with_cp

        if deploy:
            self.rbr_reparam = self._make_reparam_conv()
        else:
            self._build_branches(norm_cfg)
        self.se = SEBlock(out_channels, out_channels // 16) if use_se else None
        self.act = _build_act(act_cfg)

    def _build_branches(self, norm_cfg: dict) -> None:
        common = dict(stride=self.stride, groups=self.groups, bias=False,
                      norm_cfg=norm_cfg, act_cfg=None)
        self.rbr_dense = ConvModule(self.in_channels, self.out_channels, 3,
                                    padding=self.dilation,
                                    dilation=self.dilation, **common)
        self.rbr_1x1 = ConvModule(self.in_channels, self.out_channels, 1,
                                  padding=0, **common)
        self.rbr_identity = (build_norm_layer(norm_cfg, self.in_channels)[1]
                             if self.has_identity else None)

    def _make_reparam_conv(self, **factory) -> nn.Conv2d:
        # The one place that decides the fused conv's geometry, used both by
        # deploy=True construction and by switch_to_deploy(), so the two can
        # never disagree on padding, dilation or groups.
        return nn.Conv2d(self.in_channels, self.out_channels, 3,
                         stride=self.stride, padding=self.dilation,
                         dilation=self.dilation, groups=self.groups,
                         bias=True, **factory)

    @property
    def plain_conv(self) -> Optional[nn.Module]:
        """The conv when this block computes exactly ``relu(conv(x))`` (fused,
        no SE), else ``None``: what deploy-time engines (the Winograd
        engine's dilated runs) rely on, without knowing the block's
        attribute names."""
        if (self.deploy and self.se is None
                and type(self.act) is nn.ReLU):
            return self.rbr_reparam
        return None

    def _branch_sum(self, x):
        if self.deploy:
            return self.rbr_reparam(x)
        out = self.rbr_dense(x) + self.rbr_1x1(x)
        if self.rbr_identity is not None:
            out = out + self.rbr_identity(x)
        return out

    def _inner_forward(self, x):
        out = self._branch_sum(x)
        if self.se is not None:
            out = self.se(out)
        return self.act(out)

    def forward(self, x):
        if self.with_cp and x.requires_grad and self.training:
            return cp.checkpoint(self._inner_forward, x, use_reentrant=False)
        return self._inner_forward(x)

    def get_equivalent_kernel_bias(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """The kernel and bias of the single 3x3 conv this block equals.

        Differentiable with respect to the conv and BN parameters (the BN
        running statistics are buffers and are used as they are).
        """
        if self.deploy:
            return self.rbr_reparam.weight, self.rbr_reparam.bias
        dense = (self.rbr_dense.conv.weight,
                 BNParams.from_module(self.rbr_dense.bn))
        one_by_one = (self.rbr_1x1.conv.weight,
                      BNParams.from_module(self.rbr_1x1.bn))
        identity = (BNParams.from_module(self.rbr_identity)
                    if self.rbr_identity is not None else None)
        return fuse_branches(dense, one_by_one, identity, self.groups)

    @torch.no_grad()
    def switch_to_deploy(self):
        """Replace the branches by one 3x3 conv, in place; idempotent.

        Uses the BN running statistics whatever the train/eval mode (so the
        converted block equals the original in eval mode), and works for any
        ``_BatchNorm`` type, SyncBN included.
        """
        if self.deploy:
            return
        kernel, bias = self.get_equivalent_kernel_bias()
        # built on the meta device: a random init would be overwritten anyway
        conv = self._make_reparam_conv(device='meta').to_empty(
            device=kernel.device).to(kernel.dtype)
        conv.weight.copy_(kernel)
        conv.bias.copy_(bias)
        for name in self._branch_names:
            delattr(self, name)
        self.rbr_reparam = conv
        self.deploy = True


class QARepVGGBlock(RepVGGBlock):
    """A QARepVGG block (Chu et al., "Make RepVGG Greater Again").

    The 3x3 branch keeps conv + BN; the 1x1 branch is a plain conv and the
    identity branch a plain identity (no BN on either); one BN follows the
    sum, before the (optional SE and the) non-linearity. Without per-branch
    BNs the fused kernel's weights and the block's output keep a narrow,
    quantization-friendly range, which is why the fused model survives
    post-training INT8 quantization where RepVGG's does not.

    Parameter names: ``rbr_dense.conv.weight``, ``rbr_dense.bn.*``,
    ``rbr_1x1.weight`` (as the paper's released code, YOLOv6's
    ``QARepVGGBlock``), ``bn.*`` (the post-sum BN); fused: ``rbr_reparam``,
    exactly as a fused RepVGG block. Arguments as :class:`RepVGGBlock`.
    """

    block_type = 'qarepvgg'
    _branch_names = ('rbr_dense', 'rbr_1x1', 'rbr_identity', 'bn')

    def _build_branches(self, norm_cfg: dict) -> None:
        self.rbr_dense = ConvModule(
            self.in_channels, self.out_channels, 3, stride=self.stride,
            padding=self.dilation, dilation=self.dilation, groups=self.groups,
            bias=False, norm_cfg=norm_cfg, act_cfg=None)
        self.rbr_1x1 = nn.Conv2d(self.in_channels, self.out_channels, 1,
                                 stride=self.stride, groups=self.groups,
                                 bias=False)
        self.rbr_identity = nn.Identity() if self.has_identity else None
        self.bn = build_norm_layer(norm_cfg, self.out_channels)[1]

    def _branch_sum(self, x):
        out = super()._branch_sum(x)
        return out if self.deploy else self.bn(out)  # the post-sum BN

    def get_equivalent_kernel_bias(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """The kernel and bias of the single 3x3 conv this block equals
        (post-sum BN included); differentiable like RepVGG's."""
        if self.deploy:
            return self.rbr_reparam.weight, self.rbr_reparam.bias
        dense = (self.rbr_dense.conv.weight,
                 BNParams.from_module(self.rbr_dense.bn))
        one_by_one = (self.rbr_1x1.weight, self.rbr_1x1.bias)
        return fuse_qa_branches(dense, one_by_one,
                                self.rbr_identity is not None,
                                BNParams.from_module(self.bn), self.groups)


#: ``RepVGG(block=...)``: the block types, by name
BLOCK_TYPES = {'repvgg': RepVGGBlock, 'qarepvgg': QARepVGGBlock}
