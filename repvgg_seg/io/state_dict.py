"""State dicts: unwrapping checkpoints, comparing them with a model, loading
them strictly with a readable error. Used by every path that loads weights
(pretrained backbones, tools, resume checks)."""
import re
from collections import OrderedDict
from typing import Callable, Dict, List, Mapping, Optional

import torch
import torch.nn as nn

from ..errors import CheckpointError, shorten_list

#: the keys under which checkpoints wrap their state dict (mmengine:
#: ``state_dict``; some trainers: ``model``)
WRAPPER_KEYS = ('state_dict', 'model')


def strip_prefix(state: Mapping[str, torch.Tensor],
                 prefix: str = 'module.') -> 'OrderedDict[str, torch.Tensor]':
    """The state dict with ``prefix`` removed from the keys that have it
    (DataParallel/DDP's ``module.`` by default, as mmengine's loader does)."""
    return OrderedDict(
        (k[len(prefix):] if k.startswith(prefix) else k, v)
        for k, v in state.items())


def extract_state_dict(checkpoint, source: str = 'checkpoint'
                       ) -> 'OrderedDict[str, torch.Tensor]':
    """The model state dict of a loaded checkpoint (``{'state_dict': ...}``,
    ``{'model': ...}`` or a bare state dict), without a ``module.``
    prefix. Raises :class:`CheckpointError` when it holds no tensors."""
    state = checkpoint
    if isinstance(state, Mapping):
        for key in WRAPPER_KEYS:
            if isinstance(state.get(key), Mapping):
                state = state[key]
                break
    if (not isinstance(state, Mapping) or not state or not all(
            isinstance(v, torch.Tensor) for v in state.values())):
        raise CheckpointError(
            f'{source} holds no state dict of tensors (expected a dict of '
            'tensors, optionally under "state_dict" or "model")')
    return strip_prefix(state)


def state_dict_differences(target: Mapping[str, torch.Tensor],
                           state: Mapping[str, torch.Tensor]) -> List[str]:
    """What keeps ``state`` from loading strictly into a model whose state
    dict is ``target``: missing, unexpected and mis-shaped keys (a few of
    each, with counts); empty when it fits."""
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    mismatched = [f'{k} {tuple(state[k].shape)} vs model '
                  f'{tuple(target[k].shape)}'
                  for k in target if k in state
                  and tuple(state[k].shape) != tuple(target[k].shape)]
    problems = []
    if missing:
        problems.append(f'missing keys: {shorten_list(missing)}')
    if unexpected:
        problems.append(f'unexpected keys: {shorten_list(unexpected)}')
    if mismatched:
        problems.append(f'shape mismatches: {shorten_list(mismatched, 3)}')
    return problems


# The keys by which a training-time RepVGG block differs from its fused form
_BRANCH_KEY = re.compile(r'^(.+)\.(rbr_dense|rbr_1x1|rbr_identity)\.')
_REPARAM_KEY = re.compile(r'^(.+)\.rbr_reparam\.(weight|bias)$')


def is_fused_form(training: Mapping[str, torch.Tensor],
                  deploy: Mapping[str, torch.Tensor]) -> bool:
    """Whether ``deploy`` has the keys that fusing a model with the state
    dict ``training`` gives (``fuse_for_deploy``): they differ only in
    RepVGG blocks (branches vs ``rbr_reparam``) and in BNs folded into the
    convs before them (a conv bias instead), the keys they share have the
    same shapes and each fused kernel that of its 3x3 branch. Keys and
    shapes only: no model is built."""
    only_training = set(training) - set(deploy)
    only_deploy = set(deploy) - set(training)
    norms = {k[:-len('.running_mean')] for k in training
             if k.endswith('.running_mean')}
    branched, fused = set(), set()
    for key in only_training:
        match = _BRANCH_KEY.match(key)
        if match:
            branched.add(match.group(1))
        elif key.rsplit('.', 1)[0] not in norms:  # (a BN that was folded)
            return False
    for key in only_deploy:
        match = _REPARAM_KEY.match(key)
        if match:
            fused.add(match.group(1))
        elif not (key.endswith('.bias')
                  and key[:-len('bias')] + 'weight' in training):
            return False  # (nor the bias of a conv a BN was folded into)
    if not fused or branched != fused:
        return False
    shapes = [(training[k].shape, deploy[k].shape)
              for k in set(training) & set(deploy)]
    for block in fused:  # a fused kernel has its 3x3 branch's shape
        dense = training.get(f'{block}.rbr_dense.conv.weight')
        if dense is None:
            return False
        kernel = deploy[f'{block}.rbr_reparam.weight']
        shapes.append((dense.shape, kernel.shape))
    return all(tuple(a) == tuple(b) for a, b in shapes)


def load_state_dict_strict(model: nn.Module, state: Dict[str, torch.Tensor],
                           source: str = 'checkpoint',
                           hint: Optional[Callable] = None) -> None:
    """``model.load_state_dict(state, strict=True)`` with an error that
    lists what does not fit and, with ``hint(target, state) -> str`` (e.g.
    :func:`repvgg_seg.models.describe.mismatch_hint`, which knows the
    models), what the checkpoint is."""
    target = model.state_dict()
    problems = state_dict_differences(target, state)
    if problems:
        told = hint(target, state) if hint else ''
        raise CheckpointError(f'{source} does not fit the model: '
                              + '; '.join(problems)
                              + (f'; {told}' if told else ''))
    model.load_state_dict(state, strict=True)
