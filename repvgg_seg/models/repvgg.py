"""The RepVGG backbone for mmsegmentation (Ding et al., CVPR 2021), registered
in mmseg's ``MODELS``: stages of :mod:`.blocks` (RepVGG or QARepVGG), an arch
of :mod:`.archs`, the strides and dilations of :mod:`.dilation`.

Module and parameter names follow the official implementation
(``stage0``, ``stage1.0.rbr_dense.conv.weight``, ``rbr_reparam`` ...), so the
official ImageNet checkpoints load without renaming. Other formats (timm,
mmpretrain) are mapped by :mod:`repvgg_seg.models.pretrained`.
"""
import warnings
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model import BaseModule
from torch.nn.modules.batchnorm import _BatchNorm

from mmseg.registry import MODELS

from ..errors import ConfigError, check_choice
from .archs import ARCH_SETTINGS, resolve_arch
from .blocks import BLOCK_TYPES, RepVGGBlock
from .dilation import layer_plan, resolve_strides_dilations
from .fused import refuse_deploy_weights
from .pretrained import load_pretrained_backbone


def _pretrained_init_cfg(pretrained: Optional[str], init_cfg):
    """``init_cfg``, or the ``Pretrained`` one the deprecated ``pretrained``
    argument stands for (with mmseg's backbones' warning)."""
    if pretrained is None:
        return init_cfg
    if init_cfg is not None:
        raise ConfigError('give either pretrained or init_cfg, not both')
    # mmseg's backbones' deprecation, word for word
    warnings.warn('DeprecationWarning: pretrained is deprecated, '
                  'please use "init_cfg" instead')
    return dict(type='Pretrained', checkpoint=pretrained)


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
            ``'fast'`` (see :func:`.dilation.layer_plan`), a shortcut for
            ``strides`` and ``dilations``. Defaults to None.
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
            (the quantization-friendly block,
            :class:`.blocks.QARepVGGBlock`); both fuse into the same plain
            geometry. Defaults to ``'repvgg'``.
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
        super().__init__(_pretrained_init_cfg(pretrained, init_cfg))
        settings = resolve_arch(arch)
        check_choice('RepVGG block', block, BLOCK_TYPES, ConfigError)
        self.strides, self.dilations = resolve_strides_dilations(
            dilation, strides, dilations)
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
        self._build_stages(
            settings, in_channels,
            layer_plan(settings['num_blocks'], self.strides, self.dilations,
                       dilation),
            dict(use_se=settings['use_se'], deploy=deploy, norm_cfg=norm_cfg,
                 act_cfg=act_cfg, with_cp=with_cp))
        self._freeze_stages()
        # mmengine loads non-strictly: fused weights into this training-time
        # structure would leave it random with a warning, refused instead
        self.register_load_state_dict_pre_hook(refuse_deploy_weights)

    def _build_stages(self, settings: dict, in_channels: int, plan: list,
                      block_cfg: dict) -> None:
        """``stage0`` (the stem) to ``stage4`` and ``out_channels``, blocks
        of ``self.block`` with the (stride, dilation) of ``plan``."""
        widths = [int(base * factor) for base, factor in
                  zip(self.base_channels, settings['width_factor'])]
        stem_channels = min(64, widths[0])
        block_cls = BLOCK_TYPES[self.block]
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
        :meth:`.blocks.RepVGGBlock.switch_to_deploy`)."""
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
