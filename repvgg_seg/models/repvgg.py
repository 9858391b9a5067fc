"""RepVGG backbone for mmsegmentation (Ding et al., CVPR 2021).

Module and parameter names follow the official implementation
(``stage0``, ``stage1.0.rbr_dense.conv.weight``, ``rbr_reparam`` ...), so the
official ImageNet checkpoints load without renaming. Other formats (timm,
mmpretrain) are mapped by :mod:`repvgg_seg.models.pretrained`.

Two block types share the backbone: the paper's RepVGG block and the
QARepVGG block (Chu et al., "Make RepVGG Greater Again: A Quantization-aware
Approach"), whose fused form quantizes to INT8 without the large accuracy
drop of re-parameterized RepVGG. Both fuse into the same plain 3x3 conv, so
their deploy models are interchangeable.
"""
import warnings
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmcv.cnn import ConvModule, build_activation_layer, build_norm_layer
from mmengine.logging import print_log
from mmengine.model import BaseModule
from torch.nn.modules.batchnorm import _BatchNorm

from mmseg.registry import MODELS

from ..errors import ConfigError
from .fused import refuse_deploy_weights
from .pretrained import load_pretrained_backbone
from .reparam import BNParams, fuse_branches, fuse_qa_branches

# The official code groups the 3x3 (and 1x1) convs of layers 2, 4, ..., 26,
# counting layers across stages with stage1's first block as layer 1 (the stem
# is layer 0). The paper says "3rd, 5th, ..., 27th layer", counting the stem.
GROUPED_LAYERS = tuple(range(2, 27, 2))


def _arch(num_blocks, width_factor, groups=1, use_se=False):
    return dict(
        num_blocks=num_blocks,
        width_factor=width_factor,
        group_layer_map={i: groups for i in GROUPED_LAYERS} if groups > 1
        else {},
        use_se=use_se)


_A = (2, 4, 14, 1)
_B = (4, 6, 16, 1)

# The paper's Table 3 (depths; multipliers a for stages 1-4 and b for stage 5)
# and the g2/g4 variants of Sect. 3.4; D2se from the official repository.
ARCH_SETTINGS: Dict[str, dict] = {
    'A0': _arch(_A, (0.75, 0.75, 0.75, 2.5)),
    'A1': _arch(_A, (1, 1, 1, 2.5)),
    'A2': _arch(_A, (1.5, 1.5, 1.5, 2.75)),
    'B0': _arch(_B, (1, 1, 1, 2.5)),
    'B1': _arch(_B, (2, 2, 2, 4)),
    'B1g2': _arch(_B, (2, 2, 2, 4), groups=2),
    'B1g4': _arch(_B, (2, 2, 2, 4), groups=4),
    'B2': _arch(_B, (2.5, 2.5, 2.5, 5)),
    'B2g2': _arch(_B, (2.5, 2.5, 2.5, 5), groups=2),
    'B2g4': _arch(_B, (2.5, 2.5, 2.5, 5), groups=4),
    'B3': _arch(_B, (3, 3, 3, 5)),
    'B3g2': _arch(_B, (3, 3, 3, 5), groups=2),
    'B3g4': _arch(_B, (3, 3, 3, 5), groups=4),
    'D2se': _arch((8, 14, 24, 1), (2.5, 2.5, 2.5, 5), use_se=True),
}

PAPER_ARCHS = tuple(a for a in ARCH_SETTINGS if a != 'D2se')

DILATION_MODES = (None, 'last_two_stages', 'fast')
# The per-stage (stages 1-4) strides and dilations each named mode stands
# for; 'fast' dilates only the last layers of stage 3 (see layer_plan).
MODE_STRIDES_DILATIONS = {
    None: ((2, 2, 2, 2), (1, 1, 1, 1)),
    'last_two_stages': ((2, 2, 1, 1), (1, 1, 2, 4)),
    'fast': ((2, 2, 1, 1), (1, 1, 2, 4)),
}
# In 'fast' mode, how many of stage 3's last layers are dilated (the paper's
# "last 5 layers" are these 4 and stage 4's single block).
FAST_DILATED_LAYERS = 4


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


def resolve_arch(arch: Union[str, dict]) -> dict:
    """Validate an arch name or a custom arch dict and return its settings."""
    if isinstance(arch, str):
        if arch not in ARCH_SETTINGS:
            raise ConfigError(f'unknown RepVGG arch {arch!r}; valid archs: '
                              f'{", ".join(ARCH_SETTINGS)} (or a dict with '
                              'num_blocks and width_factor)')
        return dict(ARCH_SETTINGS[arch])
    if not isinstance(arch, dict):
        raise ConfigError(f'arch must be a str or dict, got {type(arch)}')
    missing = {'num_blocks', 'width_factor'} - set(arch)
    if missing:
        raise ConfigError(f'a custom RepVGG arch dict needs {sorted(missing)}')
    unknown = set(arch) - {'num_blocks', 'width_factor', 'group_layer_map',
                           'use_se'}
    if unknown:
        raise ConfigError(f'unknown keys in the RepVGG arch dict: '
                          f'{sorted(unknown)}')
    if len(arch['num_blocks']) != 4 or len(arch['width_factor']) != 4:
        raise ConfigError('num_blocks and width_factor need 4 entries (stages '
                          f'1-4), got {arch["num_blocks"]} and '
                          f'{arch["width_factor"]}')
    if any(int(n) < 1 for n in arch['num_blocks']):
        raise ConfigError(f'every stage needs a block: {arch["num_blocks"]}')
    return {'group_layer_map': {}, 'use_se': False, **arch}


def _stage_tuple(name: str, value, valid) -> Tuple[int, ...]:
    if (not isinstance(value, (tuple, list)) or len(value) != 4
            or not all(isinstance(v, int) and not isinstance(v, bool)
                       and valid(v) for v in value)):
        raise ConfigError(f'{name} must be 4 ints, one per stage 1-4 (stage '
                          f'0, the stem, always has stride 2): got {value!r}')
    return tuple(value)


def resolve_strides_dilations(dilation: Optional[str] = None,
                              strides: Optional[Sequence[int]] = None,
                              dilations: Optional[Sequence[int]] = None
                              ) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """The strides and dilations of stages 1-4, from a named mode or from
    per-stage tuples (mmseg's ResNet convention), never both.

    Strides must be 1 or 2 (the ImageNet layout has 2; 1 trades resolution
    for compute, as dilated ResNets do); dilations are >= 1.
    """
    if dilation not in DILATION_MODES:
        raise ConfigError(f'invalid dilation mode {dilation!r}; valid modes: '
                          f'{", ".join(map(repr, DILATION_MODES))} (or give '
                          'per-stage strides=... and dilations=...)')
    if dilation is not None and (strides is not None
                                 or dilations is not None):
        raise ConfigError(
            f'give either a dilation mode (dilation={dilation!r}) or '
            f'per-stage strides/dilations (got strides={strides!r}, '
            f'dilations={dilations!r}), not both')
    mode_strides, mode_dilations = MODE_STRIDES_DILATIONS[dilation]
    strides = _stage_tuple('strides', mode_strides if strides is None
                           else strides, lambda v: v in (1, 2))
    dilations = _stage_tuple('dilations', mode_dilations if dilations is None
                             else dilations, lambda v: v >= 1)
    return strides, dilations


def layer_plan(num_blocks: Sequence[int],
               strides: Sequence[int],
               dilations: Sequence[int],
               dilation: Optional[str] = None) -> list:
    """(stride, dilation) of every block of stages 1-4.

    Per stage (mmseg's ResNet convention): the first block has the stage's
    stride, every block the stage's dilation (``strides`` and ``dilations``
    as :func:`resolve_strides_dilations` returns them). The named modes are
    shortcuts: ``last_two_stages`` = strides (2, 2, 1, 1), dilations
    (1, 1, 2, 4) (output stride 8, as PSPNet's dilated ResNet); ``fast``
    (``dilation='fast'``): the same strides, but only the last 4 layers of
    stage 3 dilated by 2 and stage 4 by 4 (the paper's "last 5 layers"),
    which no tuple can express.
    """
    plan = []
    for n, stride, rate in zip(num_blocks, strides, dilations):
        plan.append([[stride if i == 0 else 1, rate] for i in range(n)])
    if dilation == 'fast':
        for block in plan[2][:-FAST_DILATED_LAYERS]:
            block[1] = 1
    return plan


@MODELS.register_module()
class RepVGG(BaseModule):
    """RepVGG backbone.

    Args:
        arch (str | dict): One of :data:`ARCH_SETTINGS` (``'A0'`` ...
            ``'B3g4'``, ``'D2se'``), or a dict with ``num_blocks`` and
            ``width_factor`` (4 entries each) and optionally
            ``group_layer_map`` ({layer index: groups}) and ``use_se``.
            Defaults to ``'A0'``.
        in_channels (int): Input channels. Defaults to 3.
        out_indices (Sequence[int]): Stages whose outputs are returned; 0 is
            the stem (stride 2), 1-4 are the stages (strides 4, 8, 16, 32
            without dilation). Defaults to ``(1, 2, 3, 4)``.
        dilation (str, optional): ``None``, ``'last_two_stages'`` or
            ``'fast'`` (see :func:`layer_plan`), a shortcut for ``strides``
            and ``dilations``. Defaults to None.
        deploy (bool): Build the fused (plain 3x3 conv + ReLU) form.
            Defaults to False.
        norm_cfg (dict): BN config (SyncBN in the configs, BN for CPU).
            Defaults to ``dict(type='BN', requires_grad=True)``.
        norm_eval (bool): Keep the BN layers in eval mode while training.
            Defaults to False.
        frozen_stages (int): Freeze stages 0..frozen_stages (-1: none).
            Defaults to -1.
        with_cp (bool): Gradient checkpointing of each block. Defaults to
            False.
        block (str): ``'repvgg'`` (the paper's block) or ``'qarepvgg'``
            (the quantization-friendly block, :class:`QARepVGGBlock`); both
            fuse into the same plain geometry. Defaults to ``'repvgg'``.
        strides (Sequence[int], optional): Strides of stages 1-4 (1 or 2
            each); the stem always has stride 2. ``None``: those of the
            ``dilation`` mode (``(2, 2, 2, 2)`` without one). Defaults to
            None.
        dilations (Sequence[int], optional): Dilations of stages 1-4, e.g.
            ``strides=(2, 2, 2, 1), dilations=(1, 1, 1, 2)`` for output
            stride 16; not together with a ``dilation`` mode. Padding
            equals dilation, the 1x1 branch is never dilated and the
            identity branches follow the ImageNet layout, so every
            checkpoint fits. ``None``: those of the mode (``(1, 1, 1, 1)``
            without one). Defaults to None.
        act_cfg (dict, optional): The blocks' non-linearity; ``None`` for
            none. Defaults to ``dict(type='ReLU')``.
        pretrained (str, optional): A checkpoint path; deprecated (a
            warning, as mmseg's backbones), use ``init_cfg=dict(
            type='Pretrained', checkpoint=...)``. Defaults to None.
        init_cfg (dict or list[dict], optional): Initialization config;
            ``Pretrained`` accepts the official, timm, mmpretrain and this
            project's checkpoints (see :mod:`repvgg_seg.models.pretrained`)
            and loads strictly. Defaults to None.
    """

    arch_settings = ARCH_SETTINGS
    # stage widths before the multipliers a (stages 1-3) and b (stage 4)
    base_channels = (64, 128, 256, 512)

    def __init__(self,
                 arch: Union[str, dict] = 'A0',
                 in_channels: int = 3,
                 out_indices: Sequence[int] = (1, 2, 3, 4),
                 dilation: Optional[str] = None,
                 deploy: bool = False,
                 norm_cfg: dict = dict(type='BN', requires_grad=True),
                 norm_eval: bool = False,
                 frozen_stages: int = -1,
                 with_cp: bool = False,
                 block: str = 'repvgg',
                 strides: Optional[Sequence[int]] = None,
                 dilations: Optional[Sequence[int]] = None,
                 act_cfg: Optional[dict] = dict(type='ReLU'),
                 pretrained: Optional[str] = None,
                 init_cfg=None):
        if pretrained is not None:
            if init_cfg is not None:
                raise ConfigError('give either pretrained or init_cfg, not '
                                  'both')
            # mmseg's backbones' deprecation, word for word
            warnings.warn('DeprecationWarning: pretrained is deprecated, '
                          'please use "init_cfg" instead')
            init_cfg = dict(type='Pretrained', checkpoint=pretrained)
        super().__init__(init_cfg)
        settings = resolve_arch(arch)
        if block not in BLOCK_TYPES:
            raise ConfigError(f'unknown RepVGG block {block!r}; valid blocks: '
                              f'{", ".join(map(repr, BLOCK_TYPES))}')
        self.strides, self.dilations = resolve_strides_dilations(
            dilation, strides, dilations)
        plan = layer_plan(settings['num_blocks'], self.strides,
                          self.dilations, dilation)
        out_indices = tuple(out_indices)
        if not out_indices or any(not 0 <= i <= 4 for i in out_indices):
            raise ConfigError(f'out_indices must be non-empty and in 0..4 '
                              f'(stage0 is the stem), got {out_indices}')
        if not -1 <= frozen_stages <= 4:
            raise ConfigError(f'frozen_stages must be in -1..4, got '
                              f'{frozen_stages}')
        self.arch = arch
        self.arch_name = arch if isinstance(arch, str) else 'custom'
        self.dilation = dilation
        self.block = block
        self.out_indices = out_indices
        self.deploy = deploy
        self.norm_eval = norm_eval
        self.frozen_stages = frozen_stages
        self._warned_deploy_train = False

        widths = [int(base * factor) for base, factor in
                  zip(self.base_channels, settings['width_factor'])]
        stem_channels = min(64, widths[0])
        block_cls = BLOCK_TYPES[block]
        block_cfg = dict(use_se=settings['use_se'], deploy=deploy,
                         norm_cfg=norm_cfg, act_cfg=act_cfg, with_cp=with_cp)
        self.stage0 = block_cls(in_channels, stem_channels, stride=2,
                                has_identity=False, **block_cfg)
        channels = stem_channels
        layer_idx = 1
        self.out_channels = [stem_channels]
        for stage, (width, blocks) in enumerate(zip(widths, plan), 1):
            layers = []
            for i, (stride, rate) in enumerate(blocks):
                # The identity branch depends on the ImageNet stride (2 for
                # each stage's first block), not on the dilation mode or the
                # strides, so an ImageNet checkpoint fits every one of them.
                layers.append(block_cls(
                    channels, width, stride=stride, dilation=rate,
                    groups=settings['group_layer_map'].get(layer_idx, 1),
                    has_identity=i > 0 and channels == width, **block_cfg))
                channels = width
                layer_idx += 1
            self.add_module(f'stage{stage}', nn.Sequential(*layers))
            self.out_channels.append(width)
        self._freeze_stages()
        # mmengine loads non-strictly: fused weights into this training-time
        # structure would leave it random with a warning, refused instead
        self.register_load_state_dict_pre_hook(refuse_deploy_weights)

    @property
    def stages(self):
        return [getattr(self, f'stage{i}') for i in range(5)]

    def blocks(self):
        """(name, block) of every RepVGG block, in forward order."""
        return [(n, m) for n, m in self.named_modules()
                if isinstance(m, RepVGGBlock)]

    def forward(self, x) -> Tuple[torch.Tensor, ...]:
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)

    def _freeze_stages(self):
        for stage in self.stages[:self.frozen_stages + 1]:
            stage.eval()
            for param in stage.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.deploy and not self._warned_deploy_train:
            print_log(
                'train() was called on a deploy-mode RepVGG (plain 3x3 convs, '
                'no BN): training a fused model is almost always a mistake; '
                'train the multi-branch model and convert it afterwards.',
                logger='current', level=30)
            self._warned_deploy_train = True
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    def switch_to_deploy(self):
        """Fuse every block in place (see
        :meth:`RepVGGBlock.switch_to_deploy`)."""
        for _, block in self.blocks():
            block.switch_to_deploy()
        self.deploy = True

    def init_weights(self):
        # mmengine's PretrainedInit loads non-strictly and knows only one
        # key naming; ours recognises every RepVGG checkpoint format, fuses
        # train-time weights for deploy models and refuses mismatches with a
        # clear error. A list init_cfg runs its other entries first (as
        # mmengine does) and then the Pretrained one through our loader.
        cfgs = self.init_cfg
        if isinstance(cfgs, dict):
            cfgs = [cfgs]
        pretrained = [c for c in cfgs or ()
                      if isinstance(c, dict) and c.get('type') == 'Pretrained']
        if not pretrained:
            super().init_weights()
            return
        if len(pretrained) > 1:
            raise ConfigError(f'init_cfg has {len(pretrained)} Pretrained '
                              'entries; give one checkpoint')
        if 'checkpoint' not in pretrained[0]:
            raise ConfigError('init_cfg type Pretrained needs a checkpoint')
        others = [c for c in cfgs if c is not pretrained[0]]
        if others:  # (a lone Pretrained overwrites every weight: no init)
            saved = self.init_cfg
            self.init_cfg = others
            try:
                super().init_weights()
            finally:
                self.init_cfg = saved
        load_pretrained_backbone(self, pretrained[0]['checkpoint'])
        self._is_init = True
