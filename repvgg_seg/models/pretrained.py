"""Loading RepVGG weights from every checkpoint format users have.

Recognised without a separate converter step:

* the official ImageNet checkpoints, training-time (``stage0.rbr_dense...``)
  and deploy (``rbr_reparam``), bare or wrapped in ``state_dict``/``model``,
  with or without DataParallel's ``module.`` prefix;
* timm's RepVGG checkpoints (``timm/models/byobnet.py``: ``stem.conv_kxk``,
  ``stages.0.0.conv_1x1``, ``reparam_conv``, D2se's ``attn.fc1``), which
  timm remapped from the official release;
* mmpretrain's RepVGG checkpoints (``backbone.stem.branch_3x3...``);
* this project's segmentor and classifier checkpoints (``backbone.`` prefix),
  RepVGG and QARepVGG blocks alike.

Heads (``linear``, ``head``, ``decode_head`` ...) are dropped with one log
line. A training-time checkpoint loads into a ``deploy=True`` backbone by
fusing it with the project's one re-parameterization module. A training-time
checkpoint of one block type (RepVGG, QARepVGG) is refused by a backbone
built with the other, saying why; deploy checkpoints of both are the same
plain convs and load alike. Anything else that does not fit is an error
naming the keys, and, when the checkpoint is plainly another arch, which arch
it looks like.
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

# timm's byobnet RepVGG names -> the official names this project uses.
_TIMM_RENAMES = [
    (re.compile(r'^stem\.'), 'stage0.'),
    (re.compile(r'^stages\.(\d+)\.'),
     lambda m: f'stage{int(m.group(1)) + 1}.'),
    (re.compile(r'\.conv_kxk\.'), '.rbr_dense.'),
    (re.compile(r'\.conv_1x1\.'), '.rbr_1x1.'),
    (re.compile(r'\.identity\.'), '.rbr_identity.'),
    (re.compile(r'\.reparam_conv\.'), '.rbr_reparam.'),
    (re.compile(r'\.attn\.fc1\.'), '.se.down.'),
    (re.compile(r'\.attn\.fc2\.'), '.se.up.'),
]
_TIMM_KEY = re.compile(r'^(stem|stages\.\d+\.\d+)\.(conv_kxk|conv_1x1|'
                       r'identity|reparam_conv|attn)\.')

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
# The training-time modules of a block (QARepVGG's post-sum BN is ``bn``),
# replaced by ``rbr_reparam`` when a checkpoint is fused.
_BRANCH_MODULES = ('rbr_dense', 'rbr_1x1', 'rbr_identity', 'bn')
# Keys only a training-time RepVGG block has (BN on the 1x1 and identity
# branches), and only a QARepVGG block has (a BN after the sum).
_REPVGG_ONLY = re.compile(r'\.(rbr_1x1\.bn|rbr_identity)\.running_mean$')
_QA_ONLY = re.compile(r'^stage\d(\.\d+)?\.bn\.running_mean$')
_BLOCK_NAMES = {'repvgg': 'RepVGG', 'qarepvgg': 'QARepVGG'}


def _is_timm(keys) -> bool:
    # checked before mmpretrain: both name the stem 'stem.'
    return any(_TIMM_KEY.match(k) for k in keys)


def _is_mmpretrain(keys) -> bool:
    return any(k.startswith('stem.') or k.startswith('stage_') for k in keys)


def _renamed(state, renames) -> 'OrderedDict[str, torch.Tensor]':
    out = OrderedDict()
    for key, value in state.items():
        for pattern, repl in renames:
            key = pattern.sub(repl, key)
        out[key] = value
    return out


def checkpoint_block_type(state: Mapping[str, torch.Tensor]
                          ) -> Optional[str]:
    """``'repvgg'`` or ``'qarepvgg'`` for training-time weights (in official
    names), ``None`` when the keys do not tell (deploy weights, which are
    the same plain convs for both block types)."""
    if any(_QA_ONLY.search(k) for k in state):
        return 'qarepvgg'
    if any(_REPVGG_ONLY.search(k) for k in state):
        return 'repvgg'
    return None


def _block_mismatch(source: str, ckpt_block: str, model_block: str) -> str:
    if model_block == 'qarepvgg':
        return (
            f"{source} holds training-time RepVGG weights (a BN on each of "
            f"the 3x3, 1x1 and identity branches), but the backbone is built "
            f"with block='qarepvgg', whose 1x1 and identity branches have no "
            f"BN and whose one BN follows the sum: per-branch BNs cannot be "
            f"rewritten into that structure. No official QARepVGG ImageNet "
            f"weights exist; pretrain them with "
            f"configs/imagenet/qarepvgg_<arch>_120e.py, or use "
            f"block='repvgg' for these weights")
    return (f"{source} holds training-time QARepVGG weights (a BN after the "
            f"sum of the branches), but the backbone is built with "
            f"block={model_block!r}: build it with block='qarepvgg'")


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
    if _is_timm(state):
        state = _renamed(state, _TIMM_RENAMES)
    elif _is_mmpretrain(state):
        state = _renamed(state, _MMPRETRAIN_RENAMES)
    return state, dropped


def fuse_state_dict(state: Mapping[str, torch.Tensor],
                    backbone) -> Dict[str, torch.Tensor]:
    """Training-time backbone weights -> deploy weights (``rbr_reparam``).

    ``backbone`` supplies the block names, groups and identity branches (any
    RepVGG, deploy or not, e.g. one built on the meta device); each block's
    layout (RepVGG or QARepVGG) is read from the keys.
    """
    fused = OrderedDict(state)
    for name, block in backbone.blocks():
        prefix = name + '.'
        if prefix + 'rbr_dense.conv.weight' not in state:
            raise CheckpointError(f'no training-time weights for block {name} '
                                  f'(missing {prefix}rbr_dense.conv.weight)')
        kernel, bias = fuse_block_state_dict(
            state, prefix, block.groups, has_identity=block.has_identity)
        for key in [k for k in fused if k.startswith(prefix) and
                    k[len(prefix):].split('.')[0] in _BRANCH_MODULES]:
            del fused[key]
        fused[prefix + 'rbr_reparam.weight'] = kernel
        fused[prefix + 'rbr_reparam.bias'] = bias
    return fused


@functools.lru_cache(maxsize=None)
def _arch_shapes(backbone_cls, arch: str, deploy: bool,
                 block: str = 'repvgg') -> Dict[str, tuple]:
    with torch.device('meta'):
        model = backbone_cls(arch=arch, deploy=deploy, block=block)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()
            if not k.endswith('num_batches_tracked')}


# (block, deploy) forms tried by guess_arch; deploy QARepVGG weights are the
# same plain convs as deploy RepVGG ones.
_FORMS = (('repvgg', False), ('repvgg', True), ('qarepvgg', False))


_STAGE_BLOCK = re.compile(r'^stage([1-4])\.(\d+)\.')


def _blocks_per_stage(keys) -> Tuple[int, ...]:
    counts = [0, 0, 0, 0]
    for key in keys:
        match = _STAGE_BLOCK.match(key)
        if match:
            stage, index = int(match.group(1)), int(match.group(2))
            counts[stage - 1] = max(counts[stage - 1], index + 1)
    return tuple(counts)


def guess_arch(state: Mapping[str, torch.Tensor],
               backbone_cls) -> Optional[str]:
    """The arch, block and form of ``backbone_cls`` (a RepVGG class, whose
    ``arch_settings`` are tried) whose parameter shapes the checkpoint has,
    e.g. ``'B1 (training-time)'`` or ``'B1 (QARepVGG, training-time)'``."""
    shapes = {k: tuple(v.shape) for k, v in state.items()
              if not k.endswith('num_batches_tracked')}
    depths = _blocks_per_stage(shapes)
    for arch, settings in backbone_cls.arch_settings.items():
        if tuple(settings['num_blocks']) != depths:
            continue  # no model to build (on the meta device) for this one
        for block, deploy in _FORMS:
            if _arch_shapes(backbone_cls, arch, deploy, block) == shapes:
                form = 'deploy' if deploy else 'training-time'
                if block != 'repvgg':
                    form = f'{_BLOCK_NAMES[block]}, {form}'
                return f'{arch} ({form})'
    return None


def match_state_dict(backbone, state: Mapping[str, torch.Tensor],
                     source: str) -> Dict[str, torch.Tensor]:
    """Check a backbone state dict against the model; fuse it if needed.

    Returns the state dict to load strictly, or raises :class:`CheckpointError`
    listing missing, unexpected and mis-shaped keys.
    """
    ckpt_deploy = any('rbr_reparam' in k for k in state)
    arch = getattr(backbone, 'arch_name', type(backbone).__name__)
    ckpt_block = checkpoint_block_type(state)
    model_block = getattr(backbone, 'block', 'repvgg')
    if ckpt_block is not None and ckpt_block != model_block:
        raise CheckpointError(_block_mismatch(source, ckpt_block,
                                              model_block))
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
        if getattr(backbone, 'block', 'repvgg') == 'qarepvgg':
            raise FileNotFoundError(
                f'pretrained QARepVGG weights not found: {filename}. No '
                'official QARepVGG ImageNet weights exist: pretrain them '
                'with configs/imagenet/qarepvgg_<arch>_120e.py and copy the '
                'best checkpoint to that path (see docs/backbone.md); or '
                'train from scratch with --cfg-options '
                'model.backbone.init_cfg=None') from None
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
    block = _BLOCK_NAMES.get(getattr(backbone, 'block', 'repvgg'), 'RepVGG')
    print_log(f'loaded {block}-{backbone.arch_name} backbone weights from '
              f'{filename}', logger='current')
