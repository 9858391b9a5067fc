"""Loading pretrained RepVGG weights in every supported format."""
from collections import OrderedDict

import pytest
import torch

from repvgg_seg import CheckpointError, reparameterize
from repvgg_seg.models import RepVGG
from tests.helpers import (TINY_ARCHS, captured_log, official_state,
                           randomize_bn, relative_error)
from tests.helpers import load_backbone as _load


# The wrappers are parsed on A0; that every other arch's official key table
# (D2se's SE layers included) is the model's state dict, name by name and
# shape by shape, is tests/models/test_repvgg.py's
# test_state_dict_matches_official_keys_and_shapes.
@pytest.mark.parametrize('wrapper', ['bare', 'state_dict', 'model',
                                     'module'])
def test_official_training_checkpoint(tmp_path, official_keys, wrapper):
    arch = 'A0'
    state = official_state(official_keys[f'RepVGG-{arch}']['train'])
    if wrapper == 'module':
        ckpt = OrderedDict(('module.' + k, v) for k, v in state.items())
    elif wrapper == 'bare':
        ckpt = state
    else:
        ckpt = {wrapper: state}
    path = tmp_path / f'RepVGG-{arch}-train.pth'
    torch.save(ckpt, path)
    model = _load(arch, path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


@pytest.mark.parametrize('arch', ['A0', 'B2g4'])
def test_official_deploy_checkpoint(tmp_path, official_keys, arch):
    state = official_state(official_keys[f'RepVGG-{arch}']['deploy'])
    path = tmp_path / f'RepVGG-{arch}-deploy.pth'
    torch.save(state, path)
    model = _load(arch, path, deploy=True, dilation='fast')
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    with pytest.raises(CheckpointError, match='fused .deploy. RepVGG '
                       'weights.*deploy=True'):
        _load(arch, path)


def test_imagenet_checkpoint_fits_every_dilation_mode(tmp_path,
                                                      official_keys):
    """One official ImageNet checkpoint loads into every dilation mode:
    every weight arrives, and each mode keeps its own geometry (output
    stride 32 or 8, the dilated layers of its mode)."""
    state = official_state(official_keys['RepVGG-A0']['train'])
    path = tmp_path / 'a0.pth'
    torch.save(state, path)
    x = torch.randn(1, 3, 64, 96)
    # dilated blocks of A0: stages 3-4 whole (14 + 1), or the last 4 of
    # stage 3 and stage 4
    for mode, size, dilated in ((None, (2, 3), []),
                                ('last_two_stages', (8, 12),
                                 [2] * 14 + [4]),
                                ('fast', (8, 12), [2] * 4 + [4])):
        model = _load('A0', path, dilation=mode)
        loaded = model.state_dict()
        assert len(loaded) == len(state) - 2  # the linear head dropped
        for key, value in loaded.items():
            assert torch.equal(value, state[key]), (mode, key)
        assert [b.dilation for _, b in model.blocks()
                if b.dilation > 1] == dilated, mode
        with torch.no_grad():
            assert tuple(model(x)[0].shape) == (1, 1280, *size), mode


def test_mmpretrain_checkpoint(tmp_path):
    """A real mmpretrain RepVGG classifier's checkpoint loads, and our
    backbone then computes what mmpretrain's computes."""
    mmpretrain_models = pytest.importorskip('mmpretrain.models')
    from mmengine.registry import DefaultScope
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        theirs = mmpretrain_models.ImageClassifier(
            backbone=dict(type='RepVGG', arch='B1g2', out_indices=(3,)),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(type='LinearClsHead', num_classes=1000,
                      in_channels=2048))
    randomize_bn(theirs)
    theirs.eval()
    path = tmp_path / 'mmpretrain_repvgg.pth'
    torch.save({'meta': {}, 'state_dict': theirs.state_dict()}, path)
    ours = _load('B1g2', path)
    x = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        assert relative_error(theirs.backbone(x)[0], ours(x)[0]) < 1e-6


def test_own_segmentor_checkpoint(tmp_path):
    from mmseg.registry import MODELS
    torch.manual_seed(0)
    segmentor = MODELS.build(dict(
        type='EncoderDecoder',
        backbone=dict(type='RepVGG', arch='A0', dilation='fast'),
        decode_head=dict(type='FCNHead', in_channels=1280, in_index=3,
                         channels=16, num_classes=3, num_convs=1)))
    randomize_bn(segmentor)
    path = tmp_path / 'seg.pth'
    torch.save({'meta': {'epoch': 1}, 'state_dict': segmentor.state_dict()},
               path)
    model = _load('A0', path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, segmentor.backbone.state_dict()[key])


def test_head_keys_dropped_with_one_log_line(tmp_path, official_keys):
    import logging
    path = tmp_path / 'a0.pth'
    torch.save(official_state(official_keys['RepVGG-A0']['train']), path)
    with captured_log() as log:
        _load('A0', path)
    dropped = [r for r in log.records if 'ignored' in r.getMessage()]
    assert [(r.levelno, r.getMessage()) for r in dropped] == [
        (logging.INFO, f'{path}: ignored 2 keys of linear (not part of the '
         'backbone)')]
    assert f'loaded RepVGG-A0 backbone weights from {path}' in log.messages


def test_safetensors_checkpoint(tmp_path):
    from safetensors.torch import save_file
    torch.manual_seed(0)
    source = RepVGG('A0', out_indices=(4,)).eval()
    randomize_bn(source)
    reparameterize(source)
    path = tmp_path / 'a0_deploy.safetensors'
    save_file(source.state_dict(), str(path))
    model = _load('A0', path, deploy=True)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(source(x)[0], model(x)[0])


def test_pretrained_is_deprecated_as_in_mmseg_and_still_loads(tmp_path):
    arch = TINY_ARCHS['minimal']
    source = RepVGG(arch)
    path = tmp_path / 'backbone.pth'
    torch.save(source.state_dict(), path)
    with pytest.warns(UserWarning) as caught:
        model = RepVGG(arch, pretrained=str(path))
    assert [str(w.message) for w in caught] == [
        'DeprecationWarning: pretrained is deprecated, please use '
        '"init_cfg" instead']
    assert model.init_cfg == dict(type='Pretrained', checkpoint=str(path))
    model.init_weights()
    assert torch.equal(model.stage1[0].rbr_dense.conv.weight,
                       source.stage1[0].rbr_dense.conv.weight)
