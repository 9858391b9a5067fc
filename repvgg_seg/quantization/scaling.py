"""Per-channel scaling of a fused model along its channel graph
(:mod:`.channels`): the weight ranges on either side of a producer, the
scaling itself (exact in fp32), and the outputs such a transform must
keep."""
from typing import List, Sequence

import torch
import torch.nn as nn

from ..errors import InputError
from ..models.convert import compare_outputs, flatten_tensors
from .channels import Producer, model_heads, unwrap


def _input_index(conv: nn.Conv2d) -> torch.Tensor:
    """``[Cout, Cin/groups]``: the input channel that each weight column
    reads (grouped convs read their group's slice)."""
    per_group_in = conv.in_channels // conv.groups
    per_group_out = conv.out_channels // conv.groups
    group = torch.arange(conv.out_channels) // per_group_out
    return (group[:, None] * per_group_in
            + torch.arange(per_group_in)[None, :]).to(conv.weight.device)


def output_range(producer: Producer) -> torch.Tensor:
    """Max |w| of each output channel of the producer's conv."""
    return producer.conv.weight.detach().abs().flatten(1).amax(1)


def input_range(producer: Producer) -> torch.Tensor:
    """Max |w| over every consumer weight that reads each of the
    producer's output channels (0 where none reads it)."""
    result = torch.zeros(producer.channels,
                         device=producer.conv.weight.device)
    for c in producer.consumers:
        columns = c.conv.weight.detach().abs().amax(dim=(2, 3))
        full = torch.zeros(c.conv.in_channels, device=result.device)
        full.scatter_reduce_(0, _input_index(c.conv).flatten(),
                             columns.flatten().to(full.dtype), 'amax')
        result = torch.maximum(result, full[c.offset:c.offset
                                            + producer.channels])
    return result


@torch.no_grad()
def scale_channels(producer: Producer, scale: torch.Tensor) -> None:
    """Multiply output channel ``c`` of the producer (weight and bias) by
    ``scale[c]`` and divide every consumer's matching input channel by it,
    in place: the same fp32 function for any positive, finite scale."""
    scale = torch.as_tensor(scale, dtype=torch.float64).flatten()
    if scale.numel() != producer.channels:
        raise InputError(f'{producer.name} has {producer.channels} channels,'
                         f' got {scale.numel()} scales')
    if not bool(torch.isfinite(scale).all()) or bool((scale <= 0).any()):
        raise InputError('channel scales must be positive and finite (a '
                         'negative scale does not commute with the ReLU)')
    conv = producer.conv
    factor = scale.to(conv.weight.device, conv.weight.dtype)
    conv.weight.mul_(factor.view(-1, *([1] * (conv.weight.dim() - 1))))
    if conv.bias is not None:
        conv.bias.mul_(factor)
    for c in producer.consumers:
        inverse = torch.ones(c.conv.in_channels, dtype=torch.float64,
                             device=scale.device)
        inverse[c.offset:c.offset + producer.channels] = 1 / scale
        inverse = inverse.to(c.conv.weight.device, c.conv.weight.dtype)
        c.conv.weight.mul_(inverse[_input_index(c.conv)][:, :, None, None])


# --------------------------------------------------------------------------
# what a function-preserving transform must preserve


def function_outputs(model: nn.Module, inputs: torch.Tensor
                     ) -> List[torch.Tensor]:
    """Every output a transform of ``model`` must keep: for a segmentor the
    logits of the decode head *and* of the auxiliary heads (these read
    stage outputs the decode head does not), else the model's outputs."""
    from mmseg.models.segmentors import EncoderDecoder
    model = unwrap(model)
    if isinstance(model, EncoderDecoder):
        feats = model.extract_feat(inputs)
        return [t for _, head in model_heads(model)
                for t in flatten_tensors(head(feats))]
    return flatten_tensors(model(inputs))


def worst_relative_error(reference: Sequence[torch.Tensor],
                         candidate: Sequence[torch.Tensor]) -> dict:
    """:func:`compare_outputs` per output tensor, the worst one (so the
    small auxiliary logits are not measured on the decode logits' scale)."""
    results = [compare_outputs([r], [c]) for r, c in zip(reference,
                                                         candidate)]
    return max(results, key=lambda r: r['max_rel_diff'])
