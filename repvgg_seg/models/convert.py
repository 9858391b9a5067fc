"""Whole-model conversion for deployment.

:func:`reparameterize` fuses every re-parameterizable module of any model
(a backbone, a segmentor, a classifier) in place, through each module's own
``switch_to_deploy`` (for RepVGG blocks: :func:`reparam.fuse_branches`).
:func:`fuse_for_deploy` also folds the remaining conv+BN pairs of heads and
non-RepVGG backbones with mmcv's ``fuse_conv_bn``.
"""
import copy
from typing import List, Optional, Sequence

import torch
import torch.nn as nn
from mmcv.cnn import fuse_conv_bn
from mmengine.logging import print_log

from ..errors import VerificationError


def flatten_tensors(out) -> List[torch.Tensor]:
    """The tensors of a (nested) list/tuple output, in order."""
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for item in out for t in flatten_tensors(item)]


def _forward_tensor(model: nn.Module, inputs: torch.Tensor):
    """Raw outputs of a backbone, an mmseg segmentor or an mmpretrain
    classifier (``mode='tensor'``), flattened to a list of tensors."""
    from mmengine.model import BaseModel
    if isinstance(model, BaseModel):
        return flatten_tensors(model(inputs, mode='tensor'))
    return flatten_tensors(model(inputs))


def compare_outputs(reference: Sequence[torch.Tensor],
                    candidate: Sequence[torch.Tensor]) -> dict:
    """Max absolute difference over all output tensors, and that relative
    to the reference's max absolute value: the one error measure of every
    check in the project (fusion, conversion, export, engines,
    quantization)."""
    max_abs = max((r.float().cpu() - c.float().cpu()).abs().max().item()
                  for r, c in zip(reference, candidate))
    scale = max(r.float().abs().max().item() for r in reference)
    return dict(max_abs_diff=max_abs,
                max_rel_diff=max_abs / scale if scale > 0 else max_abs)


@torch.no_grad()
def _verified(model: nn.Module, convert, input_shape, tolerance) -> dict:
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    inputs = torch.randn(*input_shape, device=device)
    before = [t.clone() for t in _forward_tensor(model, inputs)]
    count = convert(model)
    after = _forward_tensor(model, inputs)
    model.train(was_training)
    report = dict(converted=count, **compare_outputs(before, after))
    print_log(f'conversion check on input {tuple(input_shape)}: '
              f'{count} modules converted, max abs diff '
              f'{report["max_abs_diff"]:.3g}, max rel diff '
              f'{report["max_rel_diff"]:.3g}', logger='current')
    if tolerance is not None and report['max_rel_diff'] > tolerance:
        raise VerificationError(
            f'converted model differs from the original: max relative '
            f'difference {report["max_rel_diff"]:.3g} > {tolerance:g}')
    return report


def _switch_all(model: nn.Module) -> int:
    """Call every pending ``switch_to_deploy``; return how many innermost
    modules (blocks, not the backbones holding them) were converted."""
    pending = [m for m in model.modules()
               if callable(getattr(m, 'switch_to_deploy', None))
               and not getattr(m, 'deploy', False)]
    pending_ids = {id(m) for m in pending}
    innermost = sum(
        not any(id(sub) in pending_ids for sub in list(m.modules())[1:])
        for m in pending)
    for module in pending:
        module.switch_to_deploy()
    return innermost


def reparameterize(model: nn.Module, verify: bool = False,
                   input_shape=(1, 3, 67, 83),
                   tolerance: Optional[float] = None):
    """Convert every re-parameterizable module of ``model`` in place.

    Works on a bare backbone, a segmentor or a classifier, in train or eval
    mode (the BN running statistics are used), with BN or SyncBN; a second
    call changes nothing.

    Args:
        verify: run the model on a random input of ``input_shape`` before
            and after and return ``{'converted', 'max_abs_diff',
            'max_rel_diff'}`` (also logged).
        tolerance: with ``verify``, raise if the relative difference exceeds
            it.

    Returns:
        the model, or the verification report when ``verify`` is set.
    """
    if verify:
        return _verified(model, _switch_all, input_shape, tolerance)
    _switch_all(model)
    return model


def _fuse_all(model: nn.Module) -> int:
    count = _switch_all(model)
    before = sum(isinstance(m, nn.modules.batchnorm._BatchNorm)
                 for m in model.modules())
    fuse_conv_bn(model)
    after = sum(isinstance(m, nn.modules.batchnorm._BatchNorm)
                for m in model.modules())
    return count + before - after


def fuse_for_deploy(model: nn.Module, verify: bool = False,
                    input_shape=(1, 3, 67, 83),
                    tolerance: Optional[float] = None):
    """:func:`reparameterize`, then fold every remaining conv+BN pair.

    This is what ``tools/convert.py``, ``tools/test.py --fuse`` and
    ``tools/benchmark.py --fuse`` apply. BN layers not preceded by a conv
    (none in the shipped configs) are left as they are.
    """
    if verify:
        return _verified(model, _fuse_all, input_shape, tolerance)
    _fuse_all(model)
    return model


def deploy_copy(model: nn.Module) -> nn.Module:
    """A fused deep copy, leaving ``model`` untouched."""
    return fuse_for_deploy(copy.deepcopy(model))
