"""Loading RepVGG weights from every checkpoint format users have.

Recognised without a separate converter step:

* the official ImageNet checkpoints, training-time (``stage0.rbr_dense...``)
  and deploy (``rbr_reparam``), bare or wrapped in ``state_dict``/``model``,
  with or without DataParallel's ``module.`` prefix;
* mmpretrain's RepVGG checkpoints (``backbone.stem.branch_3x3...``);
* this project's segmentor and classifier checkpoints (``backbone.`` prefix).

Heads (``linear``, ``head``, ``decode_head`` ...) are dropped with one log
line. A training-time checkpoint loads into a ``deploy=True`` backbone by
fusing it with the project's one re-parameterization function. Anything else
that does not fit is an error naming the keys, and, when the checkpoint is
plainly another arch, which arch it looks like.
"""
import functools
import re
from collections import OrderedDict
from typing import Dict, List, Mapping, Optional, Tuple

import torch
from mmengine.logging import print_log

from ..errors import CheckpointError
from ..io.checkpoint import load_checkpoint_file
from ..io.state_dict import extract_state_dict, state_dict_differences
from .reparam import fuse_block_state_dict

# mmpretrain's RepVGG names -> the official names this project uses.
_MMPRETRAIN_RENAMES = [
    (re.compile(r'^stem\.'), 'stage0.'),
    (re.compile(r'^stage_(\d)\.'), r'stage\1.'),
    (re.compile(r'\.branch_3x3\.norm\.'), '.rbr_dense.bn.'),
    (re.compile(r'\.branch_3x3\.conv\.'), '.rbr_dense.conv.'),
    (re.compile(r'\.branch_1x1\.norm\.'), '.rbr_1x1.bn.'),
    (re.compile(r'\.branch_1x1\.conv\.'), '.rbr_1x1.conv.'),
    (re.compile(r'\.branch_norm\.'), '.rbr_identity.'),
    (re.compile(r'\.branch_reparam\.'), '.rbr_reparam.'),
    (re.compile(r'\.se_layer\.conv1\.conv\.'), '.se.down.'),
    (re.compile(r'\.se_layer\.conv2\.conv\.'), '.se.up.'),
]
# Keys of heads and necks that a backbone never loads.
_HEAD_PREFIXES = ('linear.', 'head.', 'fc.', 'neck.', 'decode_head.',
                  'auxiliary_head.', 'data_preprocessor.')
_BRANCH_KEY = re.compile(r'\.?(rbr_dense|rbr_1x1|rbr_identity)\.')


def _is_mmpretrain(keys) -> bool:
    return any(k.startswith('stem.') or k.startswith('stage_') for k in keys)


def extract_backbone_state(raw, source: str = 'checkpoint'
                           ) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """The backbone's tensors of any supported checkpoint, in official names.

    Returns ``(state, dropped_keys)``.
    """
    state = extract_state_dict(raw, source)
    if any(k.startswith('backbone.') for k in state):
        dropped = [k for k in state if not k.startswith('backbone.')]
        state = OrderedDict((k[len('backbone.'):], v)
                            for k, v in state.items()
                            if k.startswith('backbone.'))
    else:
        dropped = [k for k in state if k.startswith(_HEAD_PREFIXES)]
        state = OrderedDict((k, v) for k, v in state.items()
                            if not k.startswith(_HEAD_PREFIXES))
    if _is_mmpretrain(state):
        renamed = OrderedDict()
        for key, value in state.items():
            for pattern, repl in _MMPRETRAIN_RENAMES:
                key = pattern.sub(repl, key)
            renamed[key] = value
        state = renamed
    return state, dropped


def fuse_state_dict(state: Mapping[str, torch.Tensor],
                    backbone) -> Dict[str, torch.Tensor]:
    """Training-time backbone weights -> deploy weights (``rbr_reparam``).

    ``backbone`` supplies the block names and groups (any RepVGG, deploy or
    not, e.g. one built on the meta device).
    """
    fused = OrderedDict((k, v) for k, v in state.items()
                        if not _BRANCH_KEY.search(k))
    for name, block in backbone.blocks():
        prefix = name + '.'
        if prefix + 'rbr_dense.conv.weight' not in state:
            raise CheckpointError(f'no training-time weights for block {name} '
                                  f'(missing {prefix}rbr_dense.conv.weight)')
        kernel, bias = fuse_block_state_dict(state, prefix, block.groups)
        fused[prefix + 'rbr_reparam.weight'] = kernel
        fused[prefix + 'rbr_reparam.bias'] = bias
    return fused


@functools.lru_cache(maxsize=None)
def _arch_shapes(backbone_cls, arch: str, deploy: bool) -> Dict[str, tuple]:
    with torch.device('meta'):
        model = backbone_cls(arch=arch, deploy=deploy)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()
            if not k.endswith('num_batches_tracked')}


def guess_arch(state: Mapping[str, torch.Tensor],
               backbone_cls) -> Optional[str]:
    """The arch (and form) of ``backbone_cls`` (a RepVGG class, whose
    ``arch_settings`` are tried) whose parameter shapes the checkpoint
    has."""
    shapes = {k: tuple(v.shape) for k, v in state.items()
              if not k.endswith('num_batches_tracked')}
    for arch in backbone_cls.arch_settings:
        for deploy in (False, True):
            if _arch_shapes(backbone_cls, arch, deploy) == shapes:
                return f'{arch} ({"deploy" if deploy else "training-time"})'
    return None


def match_state_dict(backbone, state: Mapping[str, torch.Tensor],
                     source: str) -> Dict[str, torch.Tensor]:
    """Check a backbone state dict against the model; fuse it if needed.

    Returns the state dict to load strictly, or raises :class:`CheckpointError`
    listing missing, unexpected and mis-shaped keys.
    """
    ckpt_deploy = any('rbr_reparam' in k for k in state)
    arch = getattr(backbone, 'arch_name', type(backbone).__name__)
    if backbone.deploy and not ckpt_deploy:
        state = fuse_state_dict(state, backbone)
    elif not backbone.deploy and ckpt_deploy:
        raise CheckpointError(
            f'{source} holds fused (deploy) RepVGG weights, which cannot be '
            'split back into branches: build the backbone with deploy=True '
            'to load it')
    target = backbone.state_dict()
    state = dict(state)
    for key, value in target.items():  # absent in some older checkpoints
        if key.endswith('num_batches_tracked') and key not in state:
            state[key] = value
    problems = state_dict_differences(target, state)
    if problems:
        guess = guess_arch(state, type(backbone))
        hint = (f' The checkpoint looks like RepVGG-{guess}.' if guess
                else '')
        raise CheckpointError(
            f'{source} does not fit RepVGG-{arch}: ' + '; '.join(problems) +
            '.' + hint)
    return state


def load_pretrained_backbone(backbone, filename: str) -> None:
    """Load any supported checkpoint into a RepVGG backbone, strictly."""
    try:
        raw = load_checkpoint_file(filename)
    except FileNotFoundError:
        raise FileNotFoundError(
            f'pretrained RepVGG weights not found: {filename}. Download the '
            'official ImageNet checkpoint (RepVGG-<arch>-train.pth, linked '
            'from the official RepVGG repository, github.com/DingXiaoH/RepVGG)'
            ' to that path, see README "Pretrained weights"; or train from '
            'scratch with --cfg-options model.backbone.init_cfg=None') \
            from None
    state, dropped = extract_backbone_state(raw, filename)
    if dropped:
        heads = sorted({k.split('.')[0] for k in dropped})
        print_log(f'{filename}: ignored {len(dropped)} keys of '
                  f'{", ".join(heads)} (not part of the backbone)',
                  logger='current')
    state = match_state_dict(backbone, state, filename)
    backbone.load_state_dict(state, strict=True)
    print_log(f'loaded RepVGG-{backbone.arch_name} backbone weights from '
              f'{filename}', logger='current')
