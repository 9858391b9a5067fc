"""What a state dict holds, told from its keys and shapes alone, for the
errors of checkpoints that do not fit a model: which backbone (a RepVGG
arch and form, a ResNet depth) and whether it is the other form (deploy or
training) of the model. Above :mod:`.repvgg` and :mod:`.pretrained`, which
it uses (:func:`repvgg_seg.io.state_dict.load_state_dict_strict` takes
:func:`mismatch_hint` as its ``hint``)."""
import re
from typing import Mapping, Optional

import torch

from ..io.state_dict import is_fused_form
from .pretrained import extract_backbone_state, guess_arch
from .repvgg import RepVGG


# ResNet depths by (bottleneck blocks, blocks in layer3), as torchvision's
# and mmseg's ResNets (ResNetV1c included) name them.
_RESNET_LAYER = re.compile(r'^layer([1-4])\.(\d+)\.conv(\d)\.weight$')
_RESNET_DEPTHS = {(False, 2): 18, (False, 6): 34, (True, 6): 50,
                  (True, 23): 101, (True, 36): 152}


def describe_state_dict(state: Mapping[str, torch.Tensor]
                        ) -> Optional[str]:
    """What backbone a state dict (a model's or a checkpoint's, segmentor
    or bare backbone) holds, told from its key names and shapes alone:
    ``'RepVGG-A0 (training-time)'``, ``'a RepVGG (custom arch)'``,
    ``'ResNet-50'``, ``'a ResNet'``; ``None`` when the keys do not say."""
    backbone, _ = extract_backbone_state(state)
    if any(k.startswith('stage0.rbr_') for k in backbone):
        arch = guess_arch(backbone, RepVGG)
        return f'RepVGG-{arch}' if arch else 'a RepVGG (custom arch)'
    layers = [_RESNET_LAYER.match(k) for k in backbone]
    layers = [m for m in layers if m]
    if layers:
        bottleneck = any(m.group(3) == '3' for m in layers)
        layer3 = {m.group(2) for m in layers if m.group(1) == '3'}
        depth = _RESNET_DEPTHS.get((bottleneck, len(layer3)))
        return f'ResNet-{depth}' if depth else 'a ResNet'
    return None


def mismatch_hint(target: Mapping[str, torch.Tensor],
                  state: Mapping[str, torch.Tensor]) -> str:
    """What to do about a checkpoint ``state`` that does not fit a model
    with the state dict ``target``, when its keys tell: the other form
    (deploy or training) of this model, or another model; else ``''``."""
    if is_fused_form(target, state):
        return ('it is the deploy (fused) form of this model: use the '
                'deploy config written next to it by tools/convert.py')
    if is_fused_form(state, target):
        return ('it is the training form of this model: use the training '
                'config, not a deploy config')
    seen, model = describe_state_dict(state), describe_state_dict(target)
    if seen is None or seen == model:
        return ''
    return f'the checkpoint looks like {seen}' + (
        f', the model is {model}' if model else '')
