"""Deployment tools: conversion and export (the benchmark's and
complexity's tests are in tests/bench/, the Winograd engine's in
tests/engines/).

Tiny models and inputs only (the demo config at 64x64 and below); no
wall-clock assertions.
"""
import os
import os.path as osp

import pytest
import torch

from repvgg_seg.apis import (LogitsModule, build_model, is_deploy_config,
                             load_model)
from repvgg_seg.cli import run_cli
from repvgg_seg.config import load_config
from repvgg_seg.deploy.convert import read_checkpoint_meta

from tests.conftest import DEMO_CONFIG as DEMO
from tests.helpers import load_tool, randomize_bn, relative_error

SMALL = ['--shape', '64', '64']


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: with two OpenMP threads on a 2-core machine that
    is busy with other work, every parallel region waits for a descheduled
    thread and these tiny models run tens of times slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _logits(model, x):
    with torch.no_grad():
        return LogitsModule(model.eval())(x)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A demo segmentor with non-trivial BN statistics, saved as an mmengine
    training checkpoint."""
    folder = tmp_path_factory.mktemp('trained')
    model = build_model(DEMO)
    randomize_bn(model, seed=1)
    path = str(folder / 'train.pth')
    torch.save({'state_dict': model.state_dict(),
                'meta': {'dataset_meta': {'classes': ('road', 'car')}}}, path)
    return model, path


@pytest.fixture(scope='module')
def converted(trained, tmp_path_factory):
    """tools/convert.py on the demo checkpoint (pth)."""
    _, ckpt = trained
    out = str(tmp_path_factory.mktemp('converted') / 'demo.pth')
    assert run_cli(load_tool('convert').main, [DEMO, ckpt, out] + SMALL) == 0
    return out, out[:-len('.pth')] + '_deploy.py'


def test_convert_reloads_into_deploy_config(trained, converted):
    model, _ = trained
    out, deploy_cfg = converted
    assert osp.isfile(out) and osp.isfile(deploy_cfg)
    cfg = load_config(deploy_cfg)
    assert cfg.model.backbone.deploy is True and is_deploy_config(cfg)
    # the fused model by itself: a registered type, no hook
    assert (cfg.model.type, cfg.model.fused_type) == ('FusedModel',
                                                      'mmseg.EncoderDecoder')
    assert all(h['type'] != 'DeployFuseHook' for h in cfg.custom_hooks)
    meta = read_checkpoint_meta(out)
    assert meta['fused'] and meta['max_rel_diff'] < 1e-4
    assert meta['dataset_meta']['classes'] == ('road', 'car')
    reloaded = load_model(deploy_cfg, out)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                   for m in reloaded.modules())
    x = torch.randn(1, 3, 72, 88)
    assert relative_error(_logits(model, x), _logits(reloaded, x)) < 1e-4
    # no temporary files left behind
    assert sorted(os.listdir(osp.dirname(out))) == ['demo.pth',
                                                    'demo_deploy.py']


def test_convert_force_and_safetensors(trained, tmp_path):
    model, ckpt = trained
    out = tmp_path / 'model.safetensors'
    out.write_text('old')
    assert run_cli(load_tool('convert').main,
                   [DEMO, ckpt, str(out), '--force'] + SMALL) == 0
    from safetensors.torch import load_file
    tensors = load_file(str(out))
    assert all(isinstance(v, torch.Tensor) for v in tensors.values())
    assert any('rbr_reparam' in k for k in tensors)
    assert read_checkpoint_meta(str(out))['fused'] is True
    reloaded = load_model(str(tmp_path / 'model_deploy.py'), str(out))
    x = torch.randn(1, 3, 64, 64)
    assert relative_error(_logits(model, x), _logits(reloaded, x)) < 1e-4


def test_convert_classifier(tmp_path):
    cfg_path = tmp_path / 'cls.py'
    cfg_path.write_text(
        "default_scope = 'mmpretrain'\n"
        "model = dict(type='ImageClassifier',\n"
        "    backbone=dict(type='RepVGG', arch='A0', out_indices=(3, )),\n"
        "    neck=dict(type='GlobalAveragePooling'),\n"
        "    head=dict(type='LinearClsHead', num_classes=10,\n"
        "              in_channels=1280,\n"
        "              loss=dict(type='CrossEntropyLoss')))\n")
    model = build_model(str(cfg_path))
    assert type(model).__module__.startswith('mmpretrain')
    randomize_bn(model, seed=2)
    ckpt = tmp_path / 'cls.pth'
    torch.save({'state_dict': model.state_dict()}, ckpt)
    out = tmp_path / 'cls_deploy.pth'
    assert run_cli(load_tool('convert').main,
                   [str(cfg_path), str(ckpt), str(out), '--shape', '64',
                    '64']) == 0
    deploy_cfg = tmp_path / 'cls_deploy.py'
    assert load_config(str(deploy_cfg)).model.backbone.deploy is True
    reloaded = load_model(str(deploy_cfg), str(out))
    x = torch.randn(2, 3, 64, 64)
    assert relative_error(_logits(model, x), _logits(reloaded, x)) < 1e-4


# --------------------------------------------------------------------------
# export


def test_export_onnx_matches_torch(converted, tmp_path, capsys):
    ort = pytest.importorskip('onnxruntime')
    out, deploy_cfg = converted
    onnx_path = tmp_path / 'demo.onnx'
    export = load_tool('export_onnx').main
    assert run_cli(export, [deploy_cfg, out, str(onnx_path), '--dynamic']
                   + SMALL) == 0
    printed = capsys.readouterr().out
    assert 'max relative logit error' in printed
    # an independent check, at a size the export did not see
    model = load_model(deploy_cfg, out)
    x = torch.randn(1, 3, 80, 56)
    session = ort.InferenceSession(str(onnx_path),
                                   providers=['CPUExecutionProvider'])
    onnx_out = torch.from_numpy(session.run(None, {'input': x.numpy()})[0])
    torch_out = _logits(model, x)
    assert onnx_out.shape == torch_out.shape == (1, 19, 80, 56)
    assert relative_error(torch_out, onnx_out) < 1e-4
    # refuses to overwrite
    before = onnx_path.read_bytes()
    assert run_cli(export, [deploy_cfg, out, str(onnx_path)] + SMALL) == 2
    assert str(onnx_path) in capsys.readouterr().err
    assert onnx_path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ['demo.onnx']


def test_export_openvino_ir_matches_torch(converted, tmp_path, capsys):
    ov = pytest.importorskip('openvino')
    out, deploy_cfg = converted
    onnx_path = tmp_path / 'demo.onnx'
    assert run_cli(load_tool('export_onnx').main,
                   [deploy_cfg, out, str(onnx_path), '--openvino',
                    '--dynamic'] + SMALL) == 0
    printed = capsys.readouterr().out
    assert printed.count('openvino vs torch at') == 2  # both check sizes
    assert sorted(os.listdir(tmp_path)) == ['demo.bin', 'demo.onnx',
                                            'demo.xml']
    # fp32 weights (ov.save_model compresses to fp16 by default)
    ir = (tmp_path / 'demo.xml').read_text()
    assert 'element_type="f16"' not in ir
    # an independent check with the IR as written, at a size the export did
    # not see, at fp32 whatever the CPU's default inference precision
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(tmp_path / 'demo.xml')),
                                  'CPU', {'INFERENCE_PRECISION_HINT': 'f32'})
    x = torch.randn(1, 3, 80, 56)
    ov_out = torch.from_numpy(compiled({0: x.numpy()})[0])
    torch_out = _logits(load_model(deploy_cfg, out), x)
    assert ov_out.shape == torch_out.shape == (1, 19, 80, 56)
    assert relative_error(torch_out, ov_out) < 1e-4


def test_export_refuses_an_openvino_ir_that_differs(converted, tmp_path,
                                                    monkeypatch, capsys):
    pytest.importorskip('openvino')
    import repvgg_seg.deploy.export as export
    real_infer = export.openvino_infer

    def off_by_one_percent(path, *args, **kwargs):
        run = real_infer(path, *args, **kwargs)
        return lambda x: run(x) * 1.01

    monkeypatch.setattr(export, 'openvino_infer', off_by_one_percent)
    out, deploy_cfg = converted
    code = run_cli(load_tool('export_onnx').main,
                   [deploy_cfg, out, str(tmp_path / 'demo.onnx'),
                    '--openvino'] + SMALL)
    assert code == 2
    assert 'the OpenVINO IR differs from torch: max relative logit error ' \
        in capsys.readouterr().err
    assert os.listdir(tmp_path) == []  # neither the ONNX nor the IR
