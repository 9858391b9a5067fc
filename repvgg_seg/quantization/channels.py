"""The channel graph of a fused model: which convs feed which, channel by
channel, where scaling a channel is exact.

A per-channel transform of a fused model -- multiply output channel ``c`` of
a conv (weight and bias) by ``s_c > 0`` and divide the matching input
channel of every conv that reads it by ``s_c`` -- leaves the fp32 function
unchanged when everything between the two commutes with a positive
per-channel scale: ``relu(s*x) = s*relu(x)`` (any positively homogeneous
activation: ReLU, LeakyReLU, none), and the channel-preserving linear ops
average pooling, bilinear resize, dropout and concatenation (which moves the
channel to an offset of the consumer's input). Planting outliers
(:mod:`.outliers`) and cross-layer equalization (:mod:`.equalize`) are such
transforms; this module finds where they apply, :mod:`.scaling` applies
them.

The graph is derived from the model's structure, not traced (mmseg's heads
do not go through torch.fx). Covered, exactly:

* the model: an mmseg ``EncoderDecoder`` without a neck (also inside a
  :class:`~repvgg_seg.apis.build.LogitsModule`), or a bare ``RepVGG``
  backbone (whose returned stages are model outputs, so their last convs
  are not scaled);
* the backbone: a ``RepVGG`` whose blocks are fused (``rbr_reparam``) with
  no squeeze-and-excitation and a ReLU/LeakyReLU/no activation: each
  block's conv feeds the next block's conv, and the last block of a stage
  in ``out_indices`` also feeds every head whose ``in_index`` selects it
  (heads with an ``input_transform`` are not covered);
* ``PSPHead``: the head input feeds every pyramid-pooling conv (through
  ``AdaptiveAvgPool2d``) and the first channels of ``bottleneck`` (through
  the concatenation); pyramid conv ``i`` feeds ``bottleneck``'s channels
  ``in_channels + i*channels ...`` (through the bilinear resize and the
  concatenation); ``bottleneck`` feeds ``conv_seg`` (through dropout);
* ``FCNHead`` (the auxiliary head): the head input feeds ``convs[0]`` (and
  ``conv_cat``'s first channels with ``concat_input``), each conv of
  ``convs`` the next, the last one ``conv_seg`` (or ``conv_cat`` after the
  input's channels, which then feeds ``conv_seg``); ``num_convs=0`` too;
* the heads' convs are mmcv ``ConvModule``\\ s whose BN was folded by
  :func:`~repvgg_seg.models.convert.fuse_for_deploy` (an ``Identity`` in
  its place).

Everything else is left alone and listed as skipped, with the reason: a
RepVGG block that is not fused, a conv followed by a BN (or any norm) that
is not folded, a non-homogeneous activation (ReLU6, GELU, SiLU, sigmoid
...), squeeze-and-excitation (its gate depends on the scale), a head or
backbone of another type (ResNet baselines: their backbone is skipped, the
heads' own pairs are still covered), a subclass that overrides a forward,
a neck, and producers that feed anything not covered (a producer is only
scaled when *all* its consumers are known). ``conv_seg`` computes the
logits and is never scaled.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch.nn as nn

from ..errors import InputError, shorten_list
from ..models.repvgg import RepVGG, RepVGGBlock


@dataclass
class Consumer:
    """A conv that reads a producer's output channels ``0..C-1`` as its
    input channels ``offset..offset+C-1``; ``path`` names the ops in
    between (after the producer's activation)."""
    name: str
    conv: nn.Conv2d
    offset: int = 0
    path: Tuple[str, ...] = ()


@dataclass
class Producer:
    """A conv whose output channels may be scaled: its activation (``relu``,
    ``leaky_relu`` or ``none``) and every conv that reads its output."""
    name: str
    conv: nn.Conv2d
    activation: str
    consumers: List[Consumer] = field(default_factory=list)

    @property
    def channels(self) -> int:
        return self.conv.out_channels

    def describe(self) -> dict:
        return dict(producer=self.name, activation=self.activation,
                    consumers=[dict(name=c.name, offset=c.offset,
                                    path=list(c.path))
                               for c in self.consumers])


@dataclass
class ChannelGraph:
    """Producers in forward order, and what was left alone (``name`` and
    ``reason`` each)."""
    producers: List[Producer]
    skipped: List[dict]

    def producer(self, name: str) -> Producer:
        for p in self.producers:
            if p.name == name:
                return p
        raise InputError(f'no scalable producer named {name!r}; producers: '
                         + shorten_list([p.name for p in self.producers],
                                        limit=8))


def unwrap(model: nn.Module) -> nn.Module:
    """The segmentor (or backbone) inside a LogitsModule-like wrapper."""
    from ..apis.build import LogitsModule
    return model.model if isinstance(model, LogitsModule) else model


# --------------------------------------------------------------------------
# what one conv unit is followed by


def activation_kind(module: Optional[nn.Module]) -> Optional[str]:
    """``relu``, ``leaky_relu`` or ``none`` for positively homogeneous
    activations (f(s*x) = s*f(x) for s > 0); ``None`` for the others."""
    if module is None or type(module) is nn.Identity:
        return 'none'
    if type(module) is nn.ReLU:
        return 'relu'
    if type(module) is nn.LeakyReLU:  # slope * s*x = s * slope*x
        return 'leaky_relu'
    return None


class _Unit:
    """A conv, what follows it up to the next conv, and why it cannot be
    scaled (``problem``), if so."""

    def __init__(self, name, conv, activation=None, problem=None):
        self.name, self.conv = name, conv
        self.activation, self.problem = activation, problem


def _conv_problem(conv) -> Optional[str]:
    if not isinstance(conv, nn.Conv2d):
        return f'{type(conv).__name__} is not an nn.Conv2d'
    return None


def _block_unit(name: str, block: nn.Module) -> _Unit:
    if not isinstance(block, RepVGGBlock):
        return _Unit(name, None, problem=f'{type(block).__name__} is not a '
                     'RepVGG block')
    if not block.deploy:
        return _Unit(name, None, problem='RepVGG block not fused (run '
                     'fuse_for_deploy first)')
    unit = _Unit(f'{name}.rbr_reparam', block.rbr_reparam)
    unit.problem = _conv_problem(block.rbr_reparam)
    if block.se is not None:
        unit.problem = ('squeeze-and-excitation after the conv: its gate '
                        'depends on the scale')
    unit.activation = activation_kind(block.act)
    if unit.activation is None and unit.problem is None:
        unit.problem = (f'activation {type(block.act).__name__} is not '
                        'positively homogeneous (f(s*x) != s*f(x))')
    return unit


def _conv_module_unit(name: str, module: nn.Module) -> _Unit:
    """An mmcv ConvModule (conv, folded norm, activation)."""
    from mmcv.cnn import ConvModule
    if type(module).forward is not ConvModule.forward:
        return _Unit(name, None, problem=f'{type(module).__name__} is not an '
                     'mmcv ConvModule')
    unit = _Unit(f'{name}.conv', module.conv)
    unit.problem = _conv_problem(module.conv)
    if tuple(module.order) != ('conv', 'norm', 'act'):
        unit.problem = f'ConvModule order {module.order} is not conv-norm-act'
    norm = getattr(module, module.norm_name, None) if module.with_norm \
        else None
    if norm is not None and type(norm) is not nn.Identity:
        unit.problem = (f'{type(norm).__name__} after the conv is not folded '
                        '(run fuse_for_deploy first)')
    act = module.activate if module.with_activation else None
    unit.activation = activation_kind(act)
    if unit.activation is None and unit.problem is None:
        unit.problem = (f'activation {type(act).__name__} is not positively '
                        'homogeneous (f(s*x) != s*f(x))')
    return unit


# --------------------------------------------------------------------------
# building the graph


class _Builder:

    def __init__(self):
        self.units: Dict[str, _Unit] = {}
        self.consumers: Dict[str, List[Consumer]] = {}
        self.blocked: Dict[str, str] = {}  # producer -> reason
        self.skipped: List[dict] = []

    def add(self, unit: _Unit) -> str:
        self.units[unit.name] = unit
        self.consumers[unit.name] = []
        return unit.name

    def feed(self, producer: Optional[str], consumer: Optional[_Unit],
             offset: int = 0, path: Tuple[str, ...] = ()) -> None:
        if producer is None:
            return
        if consumer is None or consumer.conv is None:
            self.block(producer, 'feeds ' + (consumer.name if consumer else
                                             'a module') + ', which is not '
                       'a single conv (' + (consumer.problem if consumer
                                            else 'not covered') + ')')
            return
        if _conv_problem(consumer.conv):
            self.block(producer, f'feeds {consumer.name}: '
                       f'{_conv_problem(consumer.conv)}')
            return
        self.consumers[producer].append(
            Consumer(consumer.name, consumer.conv, offset, path))

    def block(self, producer: Optional[str], reason: str) -> None:
        if producer is not None:
            self.blocked.setdefault(producer, reason)

    def skip(self, name: str, reason: str) -> None:
        self.skipped.append(dict(name=name, reason=reason))

    def graph(self, outputs: Sequence[str] = ()) -> ChannelGraph:
        producers = []
        skipped = list(self.skipped)
        for name, unit in self.units.items():
            reason = (unit.problem or self.blocked.get(name)
                      or ('its output is a model output' if name in outputs
                          else None))
            if reason is None and not self.consumers[name]:
                reason = 'no conv reads its output'
            if reason is None:
                reason = self._check_channels(name)
            if reason is not None:
                skipped.append(dict(name=name, reason=reason))
                continue
            producers.append(Producer(name, unit.conv, unit.activation,
                                      self.consumers[name]))
        return ChannelGraph(producers, skipped)

    def _check_channels(self, name: str) -> Optional[str]:
        # a structure that is not what this module assumes shows here
        channels = self.units[name].conv.out_channels
        for c in self.consumers[name]:
            if c.offset + channels > c.conv.in_channels:
                return (f'channel counts do not fit: {channels} channels at '
                        f'offset {c.offset} of {c.name} '
                        f'({c.conv.in_channels} inputs)')
        return None


def _overrides(module, base, *methods) -> Optional[str]:
    """The first of ``methods`` that ``type(module)`` overrides, or None."""
    for method in methods:
        if getattr(type(module), method) is not getattr(base, method):
            return method
    return None


def _add_backbone(builder: _Builder, backbone: nn.Module, prefix: str
                  ) -> Optional[List[Optional[str]]]:
    """The fused RepVGG chain; returns the producer of each returned
    feature (in the backbone's output order), or None if not covered."""
    if not isinstance(backbone, RepVGG) or _overrides(backbone, RepVGG,
                                                      'forward'):
        builder.skip(prefix, f'backbone {type(backbone).__name__}: only a '
                     'fused RepVGG backbone is covered')
        return None
    features = []
    previous = None
    for index, stage in enumerate(backbone.stages):
        # stage0 (the stem) is one block, the others Sequentials of blocks
        blocks = ([(f'{prefix}.stage0', stage)] if index == 0 else
                  [(f'{prefix}.stage{index}.{j}', b)
                   for j, b in enumerate(stage)])
        for name, block in blocks:
            unit = _block_unit(name, block)
            builder.feed(previous, unit)
            previous = builder.add(unit) if unit.conv is not None else None
            if unit.conv is None:
                builder.skip(unit.name, unit.problem)
        if index in backbone.out_indices:
            features.append(previous)
    return features


LOGITS = 'computes the logits (a model output)'


def _dropout(head) -> Tuple[str, ...]:
    # dropout multiplies each element by 0 or 1/(1-p): it commutes with a
    # positive per-channel scale, in train mode too
    return ('dropout', ) if getattr(head, 'dropout', None) is not None \
        else ()


def _add_psp_head(builder: _Builder, head, prefix: str) -> List[tuple]:
    """The PSPHead's own pairs; returns how its input is consumed:
    ``(unit, offset, path)`` each."""
    from ..deploy.ops import ExportableAdaptiveAvgPool2d
    uses = []
    bottleneck = _conv_module_unit(f'{prefix}.bottleneck', head.bottleneck)
    conv_seg = _Unit(f'{prefix}.conv_seg', head.conv_seg)
    for i, branch in enumerate(head.psp_modules):
        if (not isinstance(branch, nn.Sequential) or len(branch) != 2
                or not isinstance(branch[0], (nn.AdaptiveAvgPool2d,
                                              ExportableAdaptiveAvgPool2d))):
            uses.append((_Unit(f'{prefix}.psp_modules.{i}', None,
                               problem='not AdaptiveAvgPool2d + '
                               'ConvModule'), 0, ()))
            continue
        unit = _conv_module_unit(f'{prefix}.psp_modules.{i}.1', branch[1])
        uses.append((unit, 0, ('adaptive_avg_pool', )))
        name = builder.add(unit)
        builder.feed(name, bottleneck, head.in_channels + i * head.channels,
                     ('resize', 'concat'))
    uses.append((bottleneck, 0, ('concat', )))
    name = builder.add(bottleneck)
    builder.feed(name, conv_seg, 0, _dropout(head))
    builder.skip(conv_seg.name, LOGITS)
    return uses


def _add_fcn_head(builder: _Builder, head, prefix: str) -> List[tuple]:
    uses = []
    conv_seg = _Unit(f'{prefix}.conv_seg', head.conv_seg)
    tail = _dropout(head)
    conv_cat = (_conv_module_unit(f'{prefix}.conv_cat', head.conv_cat)
                if head.concat_input else None)
    last = None  # the producer of ``feats`` (None: the head input itself)
    if head.num_convs > 0:
        for i, module in enumerate(head.convs):
            unit = _conv_module_unit(f'{prefix}.convs.{i}', module)
            if last is None:
                uses.append((unit, 0, ()))
            else:
                builder.feed(last, unit)
            last = builder.add(unit)
    if conv_cat is not None:
        uses.append((conv_cat, 0, ('concat', )))
        if last is None:
            uses.append((conv_cat, head.in_channels, ('concat', )))
        else:
            builder.feed(last, conv_cat, head.in_channels, ('concat', ))
        builder.feed(builder.add(conv_cat), conv_seg, 0, tail)
    elif last is None:
        uses.append((conv_seg, 0, tail))
    else:
        builder.feed(last, conv_seg, 0, tail)
    builder.skip(conv_seg.name, LOGITS)
    return uses


def _add_head(builder: _Builder, head, prefix: str):
    """The head's own pairs; returns how its input is consumed, or a reason
    why the head is not covered."""
    from mmseg.models.decode_heads import FCNHead, PSPHead
    from mmseg.models.decode_heads.decode_head import BaseDecodeHead
    from mmseg.models.decode_heads.psp_head import PPM
    if getattr(head, 'input_transform', None) is not None:
        return f'input_transform {head.input_transform!r} is not covered'
    if isinstance(head, PSPHead):
        if type(head.psp_modules) is not PPM:
            return f'psp_modules is a {type(head.psp_modules).__name__}'
        method = (_overrides(head, PSPHead, 'forward', '_forward_feature')
                  or _overrides(head, BaseDecodeHead, 'cls_seg',
                                '_transform_inputs'))
        if method is None:
            return _add_psp_head(builder, head, prefix)
    elif isinstance(head, FCNHead):
        method = (_overrides(head, FCNHead, 'forward', '_forward_feature')
                  or _overrides(head, BaseDecodeHead, 'cls_seg',
                                '_transform_inputs'))
        if method is None:
            return _add_fcn_head(builder, head, prefix)
    else:
        return (f'{type(head).__name__} is not covered (only PSPHead and '
                'FCNHead)')
    return f'{type(head).__name__} overrides {method}'


def model_heads(segmentor) -> List[Tuple[str, nn.Module]]:
    """``(prefix, head)`` of the decode head and every auxiliary head."""
    heads = [('decode_head', segmentor.decode_head)]
    aux = getattr(segmentor, 'auxiliary_head', None)
    if isinstance(aux, nn.ModuleList):
        heads += [(f'auxiliary_head.{i}', h) for i, h in enumerate(aux)]
    elif aux is not None:
        heads.append(('auxiliary_head', aux))
    return heads


def channel_graph(model: nn.Module) -> ChannelGraph:
    """The scalable producers of a fused model and their consumers, and
    what was skipped and why (see the module docstring). Names are the
    segmentor's module names (``backbone.stage4.0.rbr_reparam``,
    ``decode_head.bottleneck.conv``)."""
    from mmseg.models.segmentors import EncoderDecoder
    model = unwrap(model)
    builder = _Builder()
    if isinstance(model, RepVGG):
        features = _add_backbone(builder, model, 'backbone')
        return builder.graph(outputs=[f for f in features or () if f])
    if not isinstance(model, EncoderDecoder) or _overrides(
            model, EncoderDecoder, 'extract_feat', '_forward',
            'encode_decode'):
        builder.skip('model', f'{type(model).__name__} is not covered (an '
                     'mmseg EncoderDecoder or a RepVGG backbone)')
        return builder.graph()
    features = _add_backbone(builder, model.backbone, 'backbone')
    if model.with_neck:
        for name in features or ():
            builder.block(name, 'feeds the neck, which is not covered')
        features = None
    for prefix, head in model_heads(model):
        uses = _add_head(builder, head, prefix)
        index = getattr(head, 'in_index', None)
        if features is not None and isinstance(index, int) \
                and -len(features) <= index < len(features):
            source = features[index]
        else:
            source = None
        if isinstance(uses, str):
            builder.skip(prefix, uses)
            builder.block(source, f'feeds {prefix}: {uses}')
            continue
        for unit, offset, path in uses:
            builder.feed(source, unit, offset, path)
    return builder.graph()
