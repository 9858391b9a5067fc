"""tools/convert.py and the deploy conversion's stages: deploy checkpoints
(pth, safetensors) and configs of segmentors and classifiers, checked
against the original model."""
import os
import os.path as osp

import torch

from repvgg_seg.apis import build_model, is_deploy_config, load_model
from repvgg_seg.cli import run_cli
from repvgg_seg.config import load_config
from repvgg_seg.deploy.convert import read_checkpoint_meta

from tests.conftest import DEMO_CONFIG as DEMO
from tests.deploy.common import SMALL, logits
from tests.helpers import load_tool, randomize_bn, relative_error


def test_convert_reloads_into_deploy_config(trained, converted):
    """The tool's deploy config builds the fused model by itself, the
    deploy checkpoint loads into it strictly and gives the original logits;
    the meta keeps the check and the dataset meta; nothing else is left."""
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
    assert relative_error(logits(model, x), logits(reloaded, x)) < 1e-4
    # no temporary files left behind
    assert sorted(os.listdir(osp.dirname(out))) == ['demo.pth',
                                                    'demo_deploy.py']


def test_convert_force_and_safetensors(trained, tmp_path):
    """--force overwrites; a .safetensors output is flat fused tensors with
    the meta, and reloads to the original logits."""
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
    assert relative_error(logits(model, x), logits(reloaded, x)) < 1e-4


def test_convert_classifier(tmp_path):
    """An mmpretrain classifier converts like a segmentor."""
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
    assert relative_error(logits(model, x), logits(reloaded, x)) < 1e-4


def test_convert_reads_the_checkpoint_once(trained, tmp_path, monkeypatch):
    """The library call with ConvertOptions: the trained checkpoint is read
    once (its weights and its dataset meta), the fused logits checked
    against the original and written with the meta."""
    from repvgg_seg.deploy import convert
    model, ckpt = trained
    reads = []
    real_load = convert.load_checkpoint_file

    def counted_load(path, *args, **kwargs):
        reads.append(path)
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(convert, 'load_checkpoint_file', counted_load)
    out = str(tmp_path / 'demo.pth')
    report = convert.convert_checkpoint(
        DEMO, ckpt, out, convert.ConvertOptions(shape=(64, 64), seed=1))
    assert reads == [ckpt]
    assert report['shape'] == (64, 64)
    assert report['max_rel_diff'] < 1e-4
    assert report['reload_max_rel_diff'] < 1e-4
    meta = read_checkpoint_meta(out)
    assert meta['verify_shape'] == [64, 64]
    assert meta['dataset_meta']['classes'] == ('road', 'car')
    assert 'planted_outliers' not in meta
    x = torch.randn(1, 3, 64, 64)
    reloaded = load_model(report['config'], out)
    assert relative_error(logits(model, x), logits(reloaded, x)) < 1e-4
