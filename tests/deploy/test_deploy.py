"""Deployment tools: conversion, benchmark, complexity (Table 4), export.

Tiny models and inputs only (the demo config at 64x64 and below); no
wall-clock assertions.
"""
import json
import os
import os.path as osp

import pytest
import torch

from repvgg_seg.apis import (LogitsModule, build_model, is_deploy_config,
                             load_model)
from repvgg_seg.bench.complexity import (PAPER_TABLE4, arch_complexity,
                                         paper_round, paper_truncate)
from repvgg_seg.cli import run_cli
from repvgg_seg.config import load_config
from repvgg_seg.deploy.convert import read_checkpoint_meta

from tests.conftest import DEMO_CONFIG as DEMO
from tests.helpers import load_tool, randomize_bn, relative_error, run_tool

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
    from repvgg_seg.evaluation.agreement import pooled_agreement
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


def test_agreement_helper():
    from repvgg_seg.evaluation.agreement import agreement
    ref = torch.randn(1, 4, 8, 8)
    same = agreement(ref, ref.clone())
    assert same == dict(max_rel_error=0.0, argmax_agreement_pct=100.0)


# the peak's kernels shrunk (the real ones take seconds on 2 cores)
TINY_PEAK = dict(matmul=32, conv1x1=(16, 8), conv3x3=(16, 12))


def _injected_peak():
    """A MeasuredPeak of kernels that do nothing, with known samples."""
    from repvgg_seg.bench.peak import Kernel, MeasuredPeak
    kernels = [Kernel('matmul', 'fp32', 'mm', 10 ** 9, lambda: None),
               Kernel('conv1x1-cl', 'fp32', '1x1', 2 * 10 ** 9, lambda: None),
               Kernel('conv3x3-nchw', 'fp32', '3x3', 3 * 10 ** 9,
                      lambda: None, ref_key='fp32-nchw'),
               Kernel('matmul', 'int8', 'mm', 4 * 10 ** 9, lambda: None),
               Kernel('conv3x3', 'int8', '3x3', 5 * 10 ** 9, lambda: None,
                      ref_key='int8-nchw')]
    peak = MeasuredPeak(kernels)
    peak.times = {'fp32 matmul': [0.02, 0.01, 0.04],       # 100 GFLOP/s
                  'fp32 conv1x1-cl': [0.05, 0.02, 0.02],   # 200
                  'fp32 conv3x3-nchw': [0.1, 0.1, 0.3],    # 60
                  'int8 matmul': [0.02, 0.04, 0.01],       # 400
                  'int8 conv3x3': [0.02, 0.02, 0.02]}      # 500
    return peak


def test_measured_peak_is_the_fastest_kernel_median():
    result = _injected_peak().result()
    fp32, int8 = result['peak']['fp32'], result['peak']['int8']
    assert (fp32['kernel'], fp32['shape']) == ('conv1x1-cl', '1x1')
    assert fp32['gflops_per_s'] == pytest.approx(200)  # 2 * 2e9 / 0.02
    assert fp32['latency_ms'] == pytest.approx(20) and fp32['samples'] == 3
    assert fp32['kernels']['matmul']['gflops_per_s'] == pytest.approx(100)
    assert int8['kernel'] == 'conv3x3'
    assert int8['gflops_per_s'] == pytest.approx(500)
    assert set(result['reference_conv']) == {'fp32-nchw', 'int8-nchw'}
    assert result['reference_conv']['fp32-nchw']['gflops_per_s'] == \
        pytest.approx(60)


def test_row_shares_of_the_peak_and_the_reference_conv():
    from repvgg_seg.bench.peak import row_shares
    measured = _injected_peak().result()
    fp32 = row_shares(50.0, 'fp32', 'nchw', measured)
    assert fp32['peak_kernel'] == 'conv1x1-cl'
    assert fp32['peak_pct'] == pytest.approx(25)        # 100 * 50 / 200
    assert fp32['ref_conv_key'] == 'fp32-nchw'
    assert fp32['ref_conv_pct'] == pytest.approx(100 * 50 / 60)
    # int8-bf16 rows: their convs run in INT8, so the INT8 peak
    int8 = row_shares(600.0, 'int8-bf16', 'nchw', measured)
    assert (int8['peak_precision'], int8['ref_conv_key']) == ('int8',
                                                              'int8-nchw')
    assert int8['peak_pct'] == pytest.approx(120)
    # channels-last fp32: the peak, but no channels-last reference conv
    cl = row_shares(50.0, 'fp32', 'cl', measured)
    assert cl['peak_pct'] == pytest.approx(25) and 'ref_conv_pct' not in cl
    assert row_shares(50.0, 'bf16', 'cl', measured) == {}
    assert row_shares(50.0, 'fp32', 'nchw', None) == {}


def test_measured_peak_times_every_kernel_once_per_step():
    from repvgg_seg.bench.peak import KernelSizes, MeasuredPeak, peak_kernels
    kernels = peak_kernels({'fp32': ['nchw', 'cl']},
                           sizes=KernelSizes(**TINY_PEAK))
    assert {k.name: k.macs for k in kernels} == {
        'matmul': 32 ** 3, 'conv1x1-cl': 16 * 16 * 8 * 8,
        'conv3x3-nchw': 16 * 16 * 9 * 12 * 12,
        'conv3x3-cl': 16 * 16 * 9 * 12 * 12}
    assert [k.ref_key for k in kernels] == [None, None, 'fp32-nchw',
                                            'fp32-cl']
    peak = MeasuredPeak(kernels)
    peak.step(record=False)
    for _ in range(3):
        peak.step()
    assert all(len(t) == 3 for t in peak.times.values())
    result = peak.result()['peak']['fp32']
    rates = {k.name: 2 * k.macs / sorted(peak.times[k.id])[1] / 1e9
             for k in kernels}
    assert result['kernel'] == max(rates, key=rates.get)
    assert result['gflops_per_s'] == pytest.approx(max(rates.values()))


def test_peak_skips_emulated_bf16_with_a_note(monkeypatch):
    from types import SimpleNamespace

    from repvgg_seg.bench import peak, timing
    monkeypatch.setattr(peak, 'PEAK_SIZES', peak.KernelSizes(**TINY_PEAK))
    # as on a CPU without AVX512-BF16/AMX (this one, or any)
    monkeypatch.setattr(timing, 'reduced_precision_supported',
                        lambda precision, device: precision == 'fp32')
    rows = [SimpleNamespace(precision=p, layout=layout)
            for p, layout in (('fp32', 'nchw'), ('fp32', 'cl'),
                              ('bf16', 'cl'), ('fp32', 'nchw'))]
    notes = []
    measured = timing._make_peak(rows, 'cpu', notes, threads=1)
    assert sorted(measured.kernels) == [
        'fp32 conv1x1-cl', 'fp32 conv3x3-cl', 'fp32 conv3x3-nchw',
        'fp32 matmul']
    assert notes == ['no measured peak or reference conv for bf16: no '
                     'native kernels on this cpu']
    assert all(t == [] for t in measured.times.values())  # warm-up only


def test_table_names_the_peak_kernel():
    from repvgg_seg.bench import format_table
    from repvgg_seg.bench.peak import row_shares
    measured = _injected_peak().result()
    row = dict(name='demo', fused=True, engine='torch', precision='fp32',
               layout='nchw', latency_ms=10.0, latency_ms_q1=9.0,
               latency_ms_q3=11.0, images_per_s=100.0, peak_mem_mb=1.0,
               peak_mem_delta_mb=1.0, gmacs=0.25, gflops_per_s=50.0,
               speed_ratio=1.0)
    row.update(row_shares(50.0, 'fp32', 'nchw', measured))
    setup = dict(timed='forward', batch_size=1, shape=[64, 64],
                 device='cpu', threads=1, compile=False, rounds=3, iters=1,
                 warmup=0, torch_version='x', date='today')
    lines = format_table(dict(setup=setup, rows=[row], **measured)
                         ).splitlines()
    assert lines[2].startswith('measured peak') and \
        'fp32 200 GFLOP/s (conv1x1-cl: 1x1; others: matmul 100, ' \
        'conv3x3-nchw 60)' in lines[2]
    assert lines[3].startswith('reference conv (3x3; int8: OpenVINO; not a '
                               'ceiling): fp32-nchw 60 GFLOP/s')
    header, cells = lines[4].split(), lines[6].split()
    assert header[header.index('kernel') - 3:header.index('kernel') + 3] == [
        '%', 'peak', 'peak', 'kernel', '%', 'ref']
    assert cells[-4:-1] == ['25%', 'conv1x1-cl', '83%']
    assert 'ceil' not in lines[4]


def test_benchmark_ceiling_flag_is_a_deprecated_peak(tmp_path, monkeypatch,
                                                    capsys):
    from repvgg_seg.bench import peak
    monkeypatch.setattr(peak, 'PEAK_SIZES', peak.KernelSizes(**TINY_PEAK))
    out = tmp_path / 'bench.json'
    code, err = run_tool('benchmark', DEMO, '--fuse', 'yes', '--iters', '1',
                         '--rounds', '2', '--warmup', '0', '--threads', '1',
                         '--ceiling', '--out-json', str(out), *SMALL,
                         capsys=capsys)
    assert code == 0
    assert '--ceiling is deprecated: use --peak' in err
    result = json.loads(out.read_text())
    fp32 = result['peak']['fp32']
    assert fp32['samples'] == 2 and fp32['kernel'] in fp32['kernels']
    row = result['rows'][0]
    assert row['peak_kernel'] == fp32['kernel']
    assert row['peak_pct'] == pytest.approx(
        100 * row['gflops_per_s'] / fp32['gflops_per_s'])
    assert row['ref_conv_key'] == 'fp32-nchw' and row['ref_conv_pct'] > 0
    assert 'ceiling_pct' not in row


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

    from repvgg_seg.engines.winograd import (DilatedRun, WinogradConv2d,
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

    from repvgg_seg.engines import winograd
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
    from repvgg_seg.engines.winograd import (convert_to_winograd,
                                             nnpack_available)
    from repvgg_seg.models.convert import fuse_for_deploy
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
