"""State dicts: unwrapping checkpoints, comparing them with a model, loading
them strictly with a readable error. Used by every path that loads weights
(pretrained backbones, tools, resume checks)."""
from collections import OrderedDict
from typing import Dict, List, Mapping

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


def load_state_dict_strict(model: nn.Module, state: Dict[str, torch.Tensor],
                           source: str = 'checkpoint') -> None:
    """``model.load_state_dict(state, strict=True)`` with an error that
    lists what does not fit, and says so when a deploy checkpoint meets a
    training config or the other way round."""
    problems = state_dict_differences(model.state_dict(), state)
    if problems:
        unexpected = [k for k in state if k not in model.state_dict()]
        hint = ''
        if any('rbr_reparam' in k for k in unexpected):
            hint = ('; it looks like a deploy checkpoint: use the deploy '
                    'config written next to it by tools/convert.py')
        elif any('rbr_dense' in k for k in unexpected):
            hint = ('; it looks like a training checkpoint: use the '
                    'training config, not a deploy config')
        raise CheckpointError(f'{source} does not fit the model: '
                              + '; '.join(problems) + hint)
    model.load_state_dict(state, strict=True)
