"""A hard case for INT8 that no one has to trust: outlier channels planted
into a fused model without changing its fp32 function.

:func:`plant_outliers` multiplies a few output channels of some convs
(weight and bias) by ``k`` and divides the matching input channels of every
conv that reads them by ``k`` (all consumers from :mod:`.channels`: the next
block, the PSP head's pyramid convs and its concatenating bottleneck, the
auxiliary head). The fp32 model computes the same logits (to float
rounding), but those channels' activations are now ``k`` times larger than
their neighbours': a per-tensor activation scale then crushes the other
channels of the tensor, which is how ImageNet-trained RepVGG breaks under
post-training quantization. A stress test for any quantization change.

:func:`convert_with_outliers` (``tools/convert.py --plant-outliers``) writes
such a model as a deploy checkpoint: the deploy conversion's stages
(:mod:`repvgg_seg.deploy.convert`) with the outliers planted into the fused
model before its check against the original.
"""
from typing import Callable, Optional, Sequence, Union

import torch
from mmengine.logging import print_log

from ..deploy.convert import (ConvertOptions, check_fused, deploy_files, fuse,
                              load_trained, write_deploy)
from ..errors import InputError, check_choice
from .channels import ChannelGraph, Producer, channel_graph
from .scaling import scale_channels

#: ``where`` values of :func:`plant_outliers`, by what the producers feed
WHERE = ('backbone', 'decode_head', 'auxiliary_head', 'heads', 'any')


def _feeds(producer: Producer, prefix: str) -> bool:
    return any(c.name.startswith(prefix + '.') for c in producer.consumers)


def _selector(where) -> Callable[[Producer], bool]:
    if callable(where):
        return where
    if isinstance(where, str):
        check_choice('where', where, WHERE)
        return {
            'backbone': lambda p: p.name.startswith('backbone.'),
            'decode_head': lambda p: _feeds(p, 'decode_head'),
            'auxiliary_head': lambda p: _feeds(p, 'auxiliary_head'),
            'heads': lambda p: (_feeds(p, 'decode_head')
                                or _feeds(p, 'auxiliary_head')),
            'any': lambda p: True}[where]
    names = set(where)
    return lambda p: p.name in names


@torch.no_grad()
def plant_outliers(model: torch.nn.Module, k: float = 100.0, pairs: int = 4,
                   channels: int = 4, seed: int = 0,
                   where: Union[str, Sequence[str], Callable] = 'backbone',
                   graph: ChannelGraph = None) -> dict:
    """Plant outlier channels into a fused model, in place (see the module
    docstring).

    Args:
        k: the factor (> 0); 50-200 reproduces the RepVGG INT8 collapse.
            A power of two (64, 256) plants bit-exactly (it only changes
            the floats' exponents); others move the logits by float
            rounding (~5e-7 relative).
        pairs: how many producers (each with all its consumers) to change,
            drawn with ``seed`` among the candidates.
        channels: output channels per producer, drawn with ``seed``.
        where: which producers are candidates: ``'backbone'`` (the
            backbone's convs), ``'decode_head'`` / ``'auxiliary_head'``
            (those feeding that head: the backbone's stage output and the
            head's own convs), ``'heads'`` (feeding either), ``'any'``, a
            list of producer names, or a function ``Producer -> bool``.
        graph: :func:`~.channels.channel_graph` of ``model`` (computed when
            not given).

    Returns:
        ``dict(k, seed, where, pairs=[dict(producer, channels,
        consumers)])``, the producers in forward order.
    """
    if not k > 0 or k == float('inf'):
        raise InputError(f'k must be positive and finite (a negative factor '
                         f'does not commute with the ReLU), got {k}')
    if pairs < 1 or channels < 1:
        raise InputError(f'pairs and channels must be at least 1, got '
                         f'pairs={pairs}, channels={channels}')
    graph = graph or channel_graph(model)
    if not isinstance(where, str) and not callable(where):
        unknown = set(where) - {p.name for p in graph.producers}
        if unknown:
            graph.producer(sorted(unknown)[0])  # raises, listing the names
    select = _selector(where)
    candidates = [p for p in graph.producers if select(p)]
    if len(candidates) < pairs:
        raise InputError(
            f'where={where!r} gives {len(candidates)} scalable producers, '
            f'fewer than pairs={pairs}'
            + (f': {", ".join(p.name for p in candidates)}' if candidates
               else ''))
    gen = torch.Generator().manual_seed(seed)
    chosen = sorted(torch.randperm(len(candidates), generator=gen)[:pairs]
                    .tolist())
    planted = []
    for index in chosen:
        producer = candidates[index]
        if channels > producer.channels:
            raise InputError(f'{producer.name} has {producer.channels} '
                             f'output channels, fewer than channels='
                             f'{channels}')
        picked = sorted(torch.randperm(producer.channels, generator=gen)
                        [:channels].tolist())
        scale = torch.ones(producer.channels, dtype=torch.float64)
        scale[picked] = float(k)
        scale_channels(producer, scale)
        planted.append(dict(producer=producer.name, channels=picked,
                            consumers=[c.name for c in producer.consumers]))
    print_log(f'planted outliers (k={k:g}) in {len(planted)} producers, '
              f'{channels} channels each: '
              f'{", ".join(p["producer"] for p in planted)}',
              logger='current')
    return dict(k=float(k), seed=seed,
                where=where if isinstance(where, str) else 'custom',
                pairs=planted)


def convert_with_outliers(config, checkpoint: str, out: str,
                          options: Optional[ConvertOptions] = None,
                          **plant) -> dict:
    """The deploy conversion of ``checkpoint``
    (:func:`~repvgg_seg.deploy.convert.convert_checkpoint`'s stages and
    ``options``) with :func:`plant_outliers` (keyword arguments ``plant``:
    ``k``, ``pairs``, ``where`` ...) applied to the fused model: checked
    against the original model like the fusion, the planting recorded in
    the checkpoint's meta (``planted_outliers``). Returns the conversion's
    report with ``planted_outliers``."""
    options = options or ConvertOptions()
    files = deploy_files(out, options)
    conversion = fuse(load_trained(config, checkpoint, options), options)
    planted = plant_outliers(conversion.model, **plant)
    conversion.meta['planted_outliers'] = planted
    check_fused(conversion, options)
    return dict(write_deploy(conversion, files, options),
                planted_outliers=planted)
