"""``type='FusedModel'``: a deploy config's model, fused wherever it is built.

A deploy config (``tools/convert.py``) describes its model as

    model = dict(type='FusedModel', fused_type='mmseg.EncoderDecoder',
                 backbone=dict(type='RepVGG', deploy=True, ...), ...)

i.e. the training config's model with its ``type`` moved to ``fused_type``.
:func:`FusedModel` builds that model and fuses it at once
(:func:`repvgg_seg.models.convert.fuse_for_deploy`: RepVGG blocks
re-parameterized, the heads' conv+BN folded with mmcv's ``fuse_conv_bn``),
so every builder -- an mmengine Runner, ``mmseg.apis.init_model``,
``MMSegInferencer``, mmdeploy, a plain ``MODELS.build`` -- gets the
structure the deploy checkpoint was taken from and loads it fully. The
object built is the segmentor (classifier) itself, not a wrapper, and the
config keeps its flat layout (``model.backbone``, ``model.test_cfg`` ...)
that mmseg's tools read.

Why a registered builder and not config settings alone: the fold of conv+BN
pairs in mmseg's heads and in ResNet backbones has no config argument.

Loading refuses the other structure: a state dict that has training-time
keys (BN statistics, RepVGG branches) or lacks the fused ones raises a
:class:`~repvgg_seg.errors.CheckpointError` in one line, also under
mmengine's non-strict ``load_checkpoint``, instead of loading partly.
"""
from mmengine.registry import MODELS

from ..errors import CheckpointError, shorten_list
from .convert import fuse_for_deploy

#: the registered type name
FUSED_TYPE = 'FusedModel'


def _refuse_other_structure(module, state_dict, prefix, *args) -> None:
    """A load-state-dict pre-hook of the fused model (see the module
    docstring). Only the top-level load (``prefix == ''``) is checked."""
    if prefix:
        return
    expected = set(module.state_dict().keys())
    given = {k[len('module.'):] if k.startswith('module.') else k
             for k in state_dict}
    unexpected, missing = sorted(given - expected), sorted(expected - given)
    if not unexpected and not missing:
        return
    hint = ''
    if any(('rbr_dense' in k or 'rbr_1x1' in k or k.endswith('running_mean'))
           for k in unexpected):
        hint = (': it is a training-time checkpoint; use it with the '
                'training config, or make a deploy checkpoint with '
                'tools/convert.py')
    raise CheckpointError(
        f'the checkpoint does not fit this deploy (fused) model{hint} '
        f'(unexpected keys: {shorten_list(unexpected, 3) or "none"}; '
        f'missing keys: {shorten_list(missing, 3) or "none"})')


def refuse_deploy_weights(module, state_dict, prefix, *args) -> None:
    """A load-state-dict pre-hook of a training-time RepVGG backbone: fused
    (deploy) weights, ``rbr_reparam``, do not fit it, and mmengine's
    non-strict loading would skip them and keep random weights."""
    if getattr(module, 'deploy', False):
        return
    fused = [k for k in state_dict
             if k.startswith(prefix) and '.rbr_reparam.' in k]
    if fused:
        raise CheckpointError(
            f'the checkpoint is a deploy checkpoint (fused weights such as '
            f'{fused[0]}) and this is a training-time model: use the deploy '
            'config written next to it by tools/convert.py')


@MODELS.register_module(name=FUSED_TYPE)
def FusedModel(fused_type, **kwargs):  # noqa: N802 (a registered type)
    """Build ``dict(type=fused_type, **kwargs)`` through mmengine's
    registry and fuse it for deployment; see the module docstring."""
    model = MODELS.build(dict(type=fused_type, **kwargs))
    fuse_for_deploy(model)
    model.register_load_state_dict_pre_hook(_refuse_other_structure)
    return model


def scoped_type(model_cfg: dict, scope: str) -> object:
    """The model's ``type`` with its registry scope (``mmseg.EncoderDecoder``)
    so that :func:`FusedModel` builds it from mmengine's root registry."""
    mtype = model_cfg['type']
    if isinstance(mtype, str) and '.' not in mtype:
        return f'{scope}.{mtype}'
    return mtype
