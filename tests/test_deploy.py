"""Deployment tools: conversion, benchmark, complexity (Table 4), export.

Tiny models and inputs only (the demo config at 64x64 and below); no
wall-clock assertions.
"""
import json
import os
import os.path as osp

import pytest
import torch

from repvgg_seg.bench.complexity import (PAPER_TABLE4, arch_complexity,
                                         paper_round, paper_truncate)
from repvgg_seg.cli import run_cli
from repvgg_seg.config import load_config
from repvgg_seg.deploy import (LogitsModule, build_model, is_deploy_config,
                               load_model)
from repvgg_seg.deploy.convert import read_checkpoint_meta

from .conftest import DEMO_CONFIG as DEMO
from .helpers import load_tool, randomize_bn, relative_error

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
# benchmark

ROW_KEYS = ('config', 'fused', 'images_per_s', 'latency_ms', 'peak_mem_mb',
            'gmacs', 'gflops_per_s', 'engine', 'precision', 'device',
            'speed_ratio')


def test_benchmark_two_configs_both_fuse_variants(tmp_path, capsys):
    second = tmp_path / 'second.py'
    # another model: the demo's backbone dilated (output stride 8)
    second.write_text(f'_base_ = [{DEMO!r}]\n'
                      "model = dict(backbone=dict(dilation='fast'))\n")
    out = tmp_path / 'bench.json'
    argv = [DEMO, str(second), '--fuse', 'both', '--iters', '1',
            '--rounds', '1', '--warmup', '0', '--threads', '1',
            '--out-json', str(out)] + SMALL
    assert run_cli(load_tool('benchmark').main, argv) == 0
    table = capsys.readouterr().out
    assert 'preprocessing excluded' in table and 'second' in table
    result = json.loads(out.read_text())
    rows = result['rows']
    assert [(osp.basename(r['config']), r['fused']) for r in rows] == [
        ('pspnet_repvgg_a0_synthetic.py', False),
        ('pspnet_repvgg_a0_synthetic.py', True),
        ('second.py', False), ('second.py', True)]
    for row in rows:
        for key in ROW_KEYS:
            assert key in row, key
        for key in ('images_per_s', 'latency_ms', 'peak_mem_mb', 'gmacs',
                    'gflops_per_s', 'speed_ratio'):
            assert row[key] > 0, key
        assert (row['engine'], row['precision'], row['device']) == (
            'torch', 'fp32', 'cpu')
        assert row['samples'] == 1 and row['threads'] == 1
    assert rows[0]['speed_ratio'] == 1.0
    # fusing removes the 1x1 and BN work; dilation (stride 8) costs more
    assert rows[1]['gmacs'] < rows[0]['gmacs']
    assert rows[3]['gmacs'] < rows[2]['gmacs']
    assert rows[2]['gmacs'] > 1.5 * rows[0]['gmacs']
    assert result['setup']['shape'] == [64, 64]


def test_benchmark_bf16_agreement():
    from repvgg_seg.bench import BenchmarkOptions, benchmark
    result = benchmark([DEMO], BenchmarkOptions(
        fuse='yes', shape=(32, 32), precisions='bf16', layouts='cl',
        warmup=0, iters=1, rounds=1, threads=1))
    row = result['rows'][0]
    assert row['precision'] == 'bf16'
    agree = row['agreement']
    # bf16 really ran (fp32 differs by ~1e-7) and stays close: ~1% logit
    # error here, and argmax ties of a random-weight model flip a few pixels
    assert 1e-4 < agree['max_rel_error'] < 0.05
    assert agree['argmax_agreement_pct'] >= 90


def test_benchmark_agreement_over_a_folder_of_images(synthetic_root):
    from repvgg_seg.bench import BenchmarkOptions, benchmark
    val = osp.join(synthetic_root, 'leftImg8bit', 'val')
    result = benchmark([DEMO], BenchmarkOptions(
        fuse='yes', shape=(64, 64), precisions='bf16', layouts='cl',
        warmup=0, iters=1, rounds=1, threads=1, images=val))
    agree = result['rows'][0]['agreement']
    assert agree['images'] == 2  # the two val images, found recursively
    assert 1e-4 < agree['max_rel_error'] < 0.05
    # pooled over both images (measured 96.7%, worst image 93.8%)
    assert 80 <= agree['min_image_agreement_pct'] <= \
        agree['argmax_agreement_pct']
    assert agree['argmax_agreement_pct'] >= 90


def test_pooled_agreement_known_answer():
    from repvgg_seg.deploy.verify import pooled_agreement
    pooled = pooled_agreement([
        dict(max_rel_error=0.01, argmax_agreement_pct=99.0),
        dict(max_rel_error=0.03, argmax_agreement_pct=100.0),
        dict(max_rel_error=0.02, argmax_agreement_pct=99.5)])
    assert pooled == dict(max_rel_error=0.03, argmax_agreement_pct=99.5,
                          min_image_agreement_pct=99.0, images=3)


def test_benchmark_onnxruntime_engine_agrees():
    pytest.importorskip('onnxruntime')
    from repvgg_seg.bench import BenchmarkOptions, benchmark
    result = benchmark([DEMO], BenchmarkOptions(
        fuse='yes', shape=(64, 64), engines='onnxruntime', warmup=0, iters=1,
        rounds=1, threads=1))
    agree = result['rows'][0]['agreement']
    assert agree['max_rel_error'] < 1e-4
    assert agree['argmax_agreement_pct'] > 99.9


def test_ceiling_and_agreement_helpers():
    from repvgg_seg.bench import measure_ceiling
    from repvgg_seg.deploy.verify import agreement
    ceiling = measure_ceiling(['fp32-nchw', 'fp32-cl'], warmup=0, iters=1,
                              channels=16, size=12)
    assert set(ceiling) == {'fp32-nchw', 'fp32-cl'}
    assert all(v['gflops_per_s'] > 0 for v in ceiling.values())
    ref = torch.randn(1, 4, 8, 8)
    same = agreement(ref, ref.clone())
    assert same == dict(max_rel_error=0.0, argmax_agreement_pct=100.0)


def test_benchmark_openvino_engine_agrees():
    pytest.importorskip('openvino')
    from repvgg_seg.bench import BenchmarkOptions, benchmark
    result = benchmark([DEMO], BenchmarkOptions(
        fuse='yes', shape=(64, 64), engines='openvino', warmup=0, iters=1,
        rounds=1, threads=1))
    row = result['rows'][0]
    assert (row['engine'], row['precision']) == ('openvino', 'fp32')
    assert row['agreement']['max_rel_error'] < 1e-4
    assert row['agreement']['argmax_agreement_pct'] > 99.9


def test_openvino_engine_is_optional(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, 'openvino', None)  # import fails
    from repvgg_seg.bench import BenchmarkOptions, benchmark
    from repvgg_seg.errors import UnavailableError
    with pytest.raises(UnavailableError, match='openvino is not installed'):
        benchmark([DEMO], BenchmarkOptions(engines='openvino',
                                           shape=(32, 32)))


# --------------------------------------------------------------------------
# complexity


def test_paper_rounding_rules():
    # A0's Wino MULs: 0.747 B is 0.75 at two decimals, 0.7 at one
    assert paper_round(747_359_488) == 0.7
    assert paper_round(2_364_030_208) == 2.4  # truncation would give 2.3
    assert paper_truncate(8_309_384) == 8.30  # to nearest would give 8.31


def test_table4_every_listed_arch():
    for arch, (params_m, flops_b, wino_b) in PAPER_TABLE4.items():
        result = arch_complexity(arch)
        assert abs(result['params'] / 1e6 - params_m) < 0.015, arch
        assert paper_truncate(result['params']) == params_m, arch
        assert paper_round(result['flops']) == flops_b, arch
        assert paper_round(result['wino_muls']) == wino_b, arch
    assert paper_round(result['flops']) == 26.2  # B3, the last one
    assert paper_round(result['wino_muls']) == 12.9


def test_get_flops_tool_json(tmp_path, capsys):
    out = tmp_path / 'a0.json'
    assert run_cli(load_tool('get_flops').main,
                   ['A0', '--out-json', str(out)]) == 0
    assert '0.7 B' in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data['params'] == 8_309_384
    for key in ('params', 'flops', 'wino_muls'):
        assert isinstance(data[key], int)
    assert data['wino_muls'] < data['flops']


def test_get_flops_segmentor_config(tmp_path):
    out = tmp_path / 'seg.json'
    assert run_cli(load_tool('get_flops').main,
                   [DEMO, '--shape', '64', '64', '--out-json', str(out)]) == 0
    data = json.loads(out.read_text())
    # the auxiliary head is not part of the test-mode forward
    assert 0 < data['params'] < data['params_all']
    assert data['kind'] == 'segmentor' and data['shape'] == [64, 64]
    assert 0 < data['wino_muls'] < data['flops']


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


# --------------------------------------------------------------------------
# the Winograd engine

WINO_ARCH = dict(num_blocks=(1, 2, 5, 1), width_factor=(0.25, 0.25, 0.25, 0.5),
                 group_layer_map={2: 2, 4: 2, 6: 4, 8: 2})


@pytest.mark.parametrize('dilation', ['fast', 'last_two_stages'])
def test_winograd_matches_direct_conv(dilation):
    import copy

    from repvgg_seg.deploy.winograd import (DilatedRun, WinogradConv2d,
                                            convert_to_winograd,
                                            nnpack_available)
    from repvgg_seg.models import RepVGG
    if not nnpack_available():
        pytest.skip('no NNPACK in this PyTorch build')
    model = RepVGG(WINO_ARCH, dilation=dilation, deploy=True).eval()
    x = torch.randn(1, 3, 61, 67)  # 8x9 maps: not multiples of 2 or 4
    with torch.no_grad():
        reference = model(x)
    for method in WinogradConv2d.DILATED_METHODS:
        converted = copy.deepcopy(model)
        report = convert_to_winograd(converted, x.shape, tune=False)
        assert report['max_rel_error'] < 1e-4
        assert report['runs'] == 1  # the dilated stage-3 blocks
        assert any(isinstance(m, DilatedRun) for m in converted.modules())
        convs = [m for m in converted.modules()
                 if isinstance(m, WinogradConv2d)]
        assert {c.groups for c in convs} >= {1, 2, 4}
        for conv in convs:
            if conv.dilated:
                conv.method = method
        with torch.no_grad():
            out = converted(x)
        assert relative_error(list(reference), list(out)) < 1e-4, method


def test_winograd_plan_cache_and_dilated_run_tuning(tmp_path, monkeypatch):
    """Tuning times every conv's methods and each dilated run's choices,
    keeps the winners in the cache file, and a second conversion with that
    file times nothing and picks the same plan."""
    import copy

    from repvgg_seg.deploy import winograd
    from repvgg_seg.models import RepVGG
    if not winograd.nnpack_available():
        pytest.skip('no NNPACK in this PyTorch build')
    model = RepVGG(WINO_ARCH, dilation='last_two_stages', deploy=True).eval()
    x = torch.randn(1, 3, 45, 53)
    with torch.no_grad():
        reference = model(x)
    cache = tmp_path / 'plan.json'
    monkeypatch.setattr(winograd.tuning, '_PLAN_CACHE', {})
    timed = []
    real_time = winograd.tuning._time_once
    monkeypatch.setattr(winograd.tuning, '_time_once', lambda fn, inp: (
        timed.append(fn), real_time(fn, inp))[1])
    first = copy.deepcopy(model)
    report = winograd.convert_to_winograd(first, x.shape, tune=True, reps=1,
                                          cache_file=str(cache))
    assert report['runs'] >= 1 and report['max_rel_error'] < 1e-4
    # one timing per method of every conv, and per choice of every run
    runs = [m for m in first.modules() if isinstance(m, winograd.DilatedRun)]
    assert runs and any(fn is runs[0] for fn in timed)
    plan = json.loads(cache.read_text())
    run_keys = [k for k in plan if ':run-' in k]
    assert run_keys and all(plan[k] in ('plan', ) + winograd.RUN_CHOICES
                            for k in run_keys)
    # the second conversion reads the file: no timing, the same plan
    monkeypatch.setattr(winograd.tuning, '_PLAN_CACHE', {})
    timed.clear()
    second = copy.deepcopy(model)
    again = winograd.convert_to_winograd(second, x.shape, tune=True, reps=1,
                                         cache_file=str(cache))
    assert timed == []
    assert again['plan'] == report['plan']
    with torch.no_grad():
        assert relative_error(list(reference), list(second(x))) < 1e-4


def test_winograd_engine_on_a_fused_segmentor():
    from repvgg_seg.models.convert import fuse_for_deploy
    from repvgg_seg.deploy.winograd import convert_to_winograd, nnpack_available
    if not nnpack_available():
        pytest.skip('no NNPACK in this PyTorch build')
    model = build_model(DEMO)
    randomize_bn(model, seed=3)
    module = LogitsModule(fuse_for_deploy(model))
    x = torch.randn(1, 3, 48, 40)
    reference = _logits(model, x)
    report = convert_to_winograd(module, x.shape, tune=True, reps=1)
    assert report['convs'] > 10 and report['max_rel_error'] < 1e-4
    assert set(report['plan'].values()) <= {'direct', 'direct_s2b', 'nnpack',
                                            'nnpack_mosaic'}
    with torch.no_grad():
        assert relative_error(reference, module(x)) < 1e-4
