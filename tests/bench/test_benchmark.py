"""The interleaved benchmark end to end (tools/benchmark.py and
:func:`repvgg_seg.bench.benchmark`: rows, agreement, engines, report keys)
and its measured peak (:mod:`repvgg_seg.bench.peak`).

The demo config at 64x64 and below, the peak's kernels shrunk; no
wall-clock assertions."""
import json
import os.path as osp

import pytest

from repvgg_seg.cli import run_cli

from tests.conftest import DEMO_CONFIG as DEMO
from tests.helpers import load_tool, run_tool

SMALL = ['--shape', '64', '64']


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


def test_benchmark_onnxruntime_engine_agrees():
    pytest.importorskip('onnxruntime')
    from repvgg_seg.bench import BenchmarkOptions, benchmark
    result = benchmark([DEMO], BenchmarkOptions(
        fuse='yes', shape=(64, 64), engines='onnxruntime', warmup=0, iters=1,
        rounds=1, threads=1))
    agree = result['rows'][0]['agreement']
    assert agree['max_rel_error'] < 1e-4
    assert agree['argmax_agreement_pct'] > 99.9


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
