"""The names of a model's convolutions in torch, ONNX and OpenVINO, in one
place.

The ONNX exporter names a node after the scopes of the modules it runs in
(``/model/backbone/stage4/stage4.0/rbr_reparam/Conv``), and OpenVINO keeps
that name (``.../Conv/WithoutBiases``), but the scopes are those of the
call chain, not the module tree (the PSP head's convs come out without
``decode_head``), so parsing them is guesswork. :class:`ConvNames` matches
the two by what cannot differ: a conv's weights, byte for byte, as the
export wrote them (ties, e.g. two zero-initialized convs, are broken by the
scope words). Users name layers as the model does (``backbone.stage4.3``,
the module that holds the conv: a fused RepVGG block, a ``ConvModule``),
and :meth:`ConvNames.select` turns globs of such names into the OpenVINO
nodes NNCF's ``IgnoredScope`` takes; reports give OpenVINO's kernels back
in the model's names (:meth:`ConvNames.layer`).
"""
import difflib
import fnmatch
import hashlib
import re
from typing import Dict, List, Sequence

import numpy as np
import torch.nn as nn

from ..backends.openvino import CONV_NODE_TYPES
from ..errors import InputError

#: modules that only group others: a layer is named below them
CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def _digest(array: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(
        array, dtype=np.float32).tobytes()).hexdigest()


def _layer_names(module: nn.Module, prefix: str) -> Dict[str, str]:
    """``{conv module name: layer name}``: the layer of a conv is the
    outermost module that holds it and no other conv, below the containers
    (``backbone.stage4.3`` for ``backbone.stage4.3.rbr_reparam``, a block
    of the stage's ``Sequential``), names relative to ``prefix``."""
    modules = dict(module.named_modules())
    convs = [name for name, m in modules.items() if isinstance(m, nn.Conv2d)]
    layers = {}
    for name in convs:
        parts = name.split('.')
        layer = name
        for depth in range(len(parts) - 1, 0, -1):
            parent = '.'.join(parts[:depth])
            inside = [c for c in convs if c.startswith(parent + '.')]
            if inside != [name] or parent + '.' == prefix or isinstance(
                    modules[parent], CONTAINERS):
                break
            layer = parent
        layers[name] = layer
    return {name: _strip(layer, prefix) for name, layer in layers.items()}


def _strip(name: str, prefix: str) -> str:
    return name[len(prefix):] if prefix and name.startswith(prefix) else name


class ConvNames:
    """Which OpenVINO conv node computes which conv module of ``module``
    (the torch module that was exported, e.g. a
    :class:`~repvgg_seg.apis.build.LogitsModule`; ``prefix`` is dropped
    from its names: ``'model.'`` gives the segmentor's own names), for the
    ``openvino.Model`` ``ov_model`` read from its export (before
    quantization: the weights must still be fp32 constants)."""

    def __init__(self, module: nn.Module, ov_model, prefix: str = 'model.'):
        layers = _layer_names(module, prefix)
        by_digest: Dict[str, List[str]] = {}
        for name, conv in module.named_modules():
            if isinstance(conv, nn.Conv2d):
                by_digest.setdefault(
                    _digest(conv.weight.detach().cpu().numpy()),
                    []).append(name)
        #: OpenVINO node name -> conv module name (segmentor-relative)
        self.modules: Dict[str, str] = {}
        #: conv module name -> layer name
        self.layers = {_strip(n, prefix): layer
                       for n, layer in layers.items()}
        for op in ov_model.get_ordered_ops():
            if op.get_type_name() not in CONV_NODE_TYPES:
                continue
            source = op.input_value(1).get_node()
            if source.get_type_name() != 'Constant':
                continue
            names = by_digest.get(_digest(source.get_data()), [])
            if names:
                name = self._best(op.get_friendly_name(), names)
                names.remove(name)
                self.modules[op.get_friendly_name()] = _strip(name, prefix)

    @staticmethod
    def _best(ov_name: str, candidates: Sequence[str]) -> str:
        words = set(re.split(r'[/.]', ov_name))
        return max(candidates,
                   key=lambda c: sum(w in words for w in c.split('.')))

    def layer(self, ov_name: str) -> str:
        """The layer name of an OpenVINO conv node (the node's own name
        when it is not one of the module's convs)."""
        module = self.modules.get(ov_name)
        return self.layers.get(module, ov_name) if module else ov_name

    @property
    def exported_layers(self) -> List[str]:
        """The layers of the exported graph, in graph order."""
        return [self.layers[m] for m in self.modules.values()]

    def select(self, patterns: Sequence[str],
               option: str = '--keep-fp32') -> Dict[str, List[str]]:
        """``{pattern: [OpenVINO node names]}`` for globs of layer or conv
        module names (``backbone.stage4.*``, ``decode_head.conv_seg``);
        :class:`InputError` naming the nearest layers for a pattern that
        matches none of the exported ones."""
        selected = {}
        for pattern in patterns:
            nodes = [node for node, module in self.modules.items()
                     if fnmatch.fnmatchcase(self.layers[module], pattern)
                     or fnmatch.fnmatchcase(module, pattern)]
            if not nodes:
                names = self.exported_layers
                near = difflib.get_close_matches(pattern, names, n=5,
                                                 cutoff=0.4) or names[:5]
                raise InputError(
                    f'{option} {pattern!r} matches no layer of the '
                    f'exported model; near names: {", ".join(near)} (of '
                    f'{len(names)} layers; globs like backbone.stage4.* '
                    'work)')
            selected[pattern] = nodes
        return selected
