"""The benchmark's rows on CUDA: the model's data preprocessor and the
agreement images follow the model's device, fp32 is IEEE fp32 (TF32 off,
recorded), the peak's kernels are sized for a GPU, per-row CUDA memory,
onnxruntime's CUDA provider on the run's device with IO binding, and no
CPU thread counts on GPU rows.

The CPU tests check each piece on this machine (the device-moving ones on
``meta``, which a CPU-only torch has too; the CUDA calls replaced where
there is no GPU); the ``gpu`` tests run the benchmark's rows on CUDA
(``pytest -m gpu``; skipped where none is visible)."""
import time

import pytest
import torch

from repvgg_seg.apis import LogitsModule, build_model
from repvgg_seg.bench import host, memory, peak, timing
from repvgg_seg.bench.timing import BenchmarkOptions, Row, benchmark
from repvgg_seg.engines import interleaved
from repvgg_seg.errors import InputError
from repvgg_seg.evaluation.windows import ImageWindows, windows_agreement


@pytest.fixture
def tiny_model(tiny_config):
    return build_model(tiny_config)


# --------------------------------------------------------------------------
# 1. the data preprocessor and the images follow the model's device


def test_logits_module_to_moves_the_data_preprocessors_device(tiny_model):
    module = LogitsModule(tiny_model)
    assert tiny_model.data_preprocessor.device == torch.device('cpu')
    assert module.to('meta') is module
    weights = next(tiny_model.parameters()).device
    assert weights == torch.device('meta')
    assert tiny_model.data_preprocessor.device == weights
    assert module.device == weights
    # its mean/std (buffers) went with the weights, as nn.Module moves them
    assert tiny_model.data_preprocessor.mean.device == weights


def test_a_dtype_or_layout_change_keeps_the_device(tiny_model):
    module = LogitsModule(tiny_model).to(torch.float16)
    assert tiny_model.data_preprocessor.device == torch.device('cpu')
    assert next(tiny_model.parameters()).dtype == torch.float16
    module.to(memory_format=torch.channels_last)
    assert tiny_model.data_preprocessor.device == torch.device('cpu')


def test_images_are_made_on_the_models_device(tiny_model):
    """The generated agreement images go through the model's own data
    preprocessor: on the device the model was moved to."""
    LogitsModule(tiny_model).to('meta')
    windows = ImageWindows.generated(tiny_model, [0], (64, 64))
    window = windows.first()
    assert window.device == torch.device('meta')
    assert tuple(window.shape) == (1, 3, 64, 64)


class _DeviceProbe(torch.nn.Module):
    """A reference whose weights are on ``meta``: records the device of
    what it is given and returns fixed CPU logits."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1, device='meta'))
        self.seen = []

    def forward(self, x):
        self.seen.append(x.device)
        return torch.arange(2 * 64 * 64, dtype=torch.float32).reshape(
            1, 2, 64, 64)


def test_agreement_windows_go_to_the_references_device(tiny_model):
    windows = ImageWindows.generated(tiny_model, [0, 1], (64, 64))  # CPU
    reference, given = _DeviceProbe(), []

    def run(x):
        given.append(x.device)
        return torch.arange(2 * 64 * 64, dtype=torch.float32).reshape(
            1, 2, 64, 64)

    result = windows_agreement(windows, reference, run, progress=False)
    assert reference.seen == [torch.device('meta')] * 2
    assert given == [torch.device('meta')] * 2  # runners take x as it is
    assert result['images'] == 2 and result['max_rel_error'] == 0.0


# --------------------------------------------------------------------------
# 2. TF32


@pytest.fixture
def tf32_defaults():
    """cuDNN's default (TF32 on for convs) and a TF32 matmul, restored
    after the test."""
    from repvgg_seg.bench import precision
    saved = precision.tf32_flags()
    precision._set_tf32(True, True, 'high')
    yield
    precision._set_tf32(saved['cudnn_allow_tf32'],
                        saved['cuda_matmul_allow_tf32'],
                        saved['float32_matmul_precision'])


def test_fp32_on_cuda_turns_tf32_off_and_restores_it(tf32_defaults):
    from repvgg_seg.bench import precision
    with precision.cuda_precision_settings('cuda') as report:
        assert torch.backends.cudnn.allow_tf32 is False
        assert torch.backends.cuda.matmul.allow_tf32 is False
        assert torch.get_float32_matmul_precision() == 'highest'
        # torch's newer per-op switches say the same (cuDNN's conv: not
        # tf32; 'none' is what the flag above sets)
        assert torch.backends.cudnn.conv.fp32_precision != 'tf32'
        assert torch.backends.cuda.matmul.fp32_precision == 'ieee'
    assert report == dict(
        tf32=False, cudnn_allow_tf32=False, cuda_matmul_allow_tf32=False,
        float32_matmul_precision='highest',
        note='fp32 is IEEE fp32: TF32 off for cuDNN and cuBLAS')
    assert precision.tf32_flags() == dict(
        cudnn_allow_tf32=True, cuda_matmul_allow_tf32=True,
        float32_matmul_precision='high')


def test_tf32_on_cuda_when_asked_and_restored_after_an_error():
    from repvgg_seg.bench import precision
    saved = precision.tf32_flags()
    precision._set_tf32(False, False, 'highest')
    try:
        with pytest.raises(RuntimeError, match='a failed row'):
            with precision.cuda_precision_settings('cuda:1',
                                                   tf32=True) as report:
                assert torch.backends.cudnn.allow_tf32 is True
                assert torch.backends.cuda.matmul.allow_tf32 is True
                assert torch.get_float32_matmul_precision() == 'high'
                raise RuntimeError('a failed row')
        assert report['tf32'] is True and report['cudnn_allow_tf32']
        assert precision.tf32_flags() == dict(
            cudnn_allow_tf32=False, cuda_matmul_allow_tf32=False,
            float32_matmul_precision='highest')
    finally:
        precision._set_tf32(saved['cudnn_allow_tf32'],
                            saved['cuda_matmul_allow_tf32'],
                            saved['float32_matmul_precision'])


def test_cpu_sets_no_tf32_and_says_so(tf32_defaults):
    from repvgg_seg.bench import precision
    with precision.cuda_precision_settings('cpu') as report:
        assert precision.tf32_flags()['cudnn_allow_tf32'] is True
    assert report == dict(tf32=None, note='CPU: no TF32 (nothing set)')


def test_tf32_threads_and_device_options_are_checked():
    with pytest.raises(InputError, match='--tf32 applies to --device cuda'):
        BenchmarkOptions(tf32=True).validated()
    for device in ('gpu', 'cuda:x', 'cpu:0'):
        with pytest.raises(InputError, match='valid: cpu, cuda, cuda:N'):
            BenchmarkOptions(device=device).validated()


# --------------------------------------------------------------------------
# 3. the peak on CUDA: GPU-sized kernels, several calls per sample


def test_peak_kernels_are_sized_for_the_device():
    assert peak.peak_sizes('cpu') is peak.PEAK_SIZES
    gpu = peak.peak_sizes('cuda:1')
    assert gpu is peak.CUDA_PEAK_SIZES
    assert gpu.matmul ** 3 >= 100 * peak.PEAK_SIZES.matmul ** 3
    # the reference conv is one conv of the models: the same shape
    assert gpu.conv3x3 == peak.PEAK_SIZES.conv3x3
    assert peak.MeasuredPeak([], 'cuda').min_sample_s == \
        peak.CUDA_MIN_SAMPLE_S
    assert peak.MeasuredPeak([], 'cpu').min_sample_s is None


def test_a_sample_runs_a_short_kernel_back_to_back():
    calls = []

    def run():
        calls.append(1)
        time.sleep(0.002)

    kernel = peak.Kernel('matmul', 'fp32', 'mm', 10 ** 6, run)
    measured = peak.MeasuredPeak([kernel], 'cpu', min_sample_s=0.02)
    measured.calibrate()  # one call timed: >= 2 ms, so <= 10 calls
    assert 2 <= kernel.calls <= 10
    calls.clear()
    measured.step()
    measured.step()
    assert len(calls) == 2 * kernel.calls
    # seconds per call, not per sample
    assert all(0.002 <= t < 0.01 for t in measured.times['fp32 matmul'])
    result = measured.result()['peak']['fp32']['kernels']['matmul']
    assert result['calls_per_sample'] == kernel.calls
    # on CPU (no min_sample_s) a sample is one call, as before
    cpu = peak.Kernel('matmul', 'fp32', 'mm', 10 ** 6, run)
    peak.MeasuredPeak([cpu], 'cpu').calibrate()
    assert cpu.calls == 1


# --------------------------------------------------------------------------
# 4. CUDA memory per row


class _FakeAllocator:
    """The CUDA caching allocator's counters, for a machine without
    CUDA: ``allocated`` bytes now, ``peak`` since the last reset."""

    def __init__(self, monkeypatch, allocated: int):
        self.allocated = self.peak = allocated
        self.devices = []
        monkeypatch.setattr(memory, '_cuda_start', self.start)
        monkeypatch.setattr(memory, '_cuda_peak', self.max)

    def start(self, device):
        self.devices.append(device)
        self.peak = self.allocated  # reset_peak_memory_stats
        return self.allocated

    def max(self, device):
        self.devices.append(device)
        return self.peak

    def use(self, transient: int, resident: int = 0):
        """A call that needs ``transient`` bytes of activations and keeps
        ``resident`` more allocated."""
        self.peak = max(self.peak, self.allocated + transient)
        self.allocated += resident


def test_cuda_memory_meter_reads_the_runs_device(monkeypatch):
    fake = _FakeAllocator(monkeypatch, 100 * 2**20)
    meter = memory.MemoryMeter('cuda:1')
    assert meter.start() == 100
    fake.use(30 * 2**20)
    assert meter.peak() == 130
    assert fake.devices == [torch.device('cuda', 1)] * 2


def test_cuda_rows_report_their_own_peak_over_what_was_allocated(
        monkeypatch):
    """Per-row peaks on CUDA: reset before each row, so a small row after
    a big one reports its own peak, and its delta is over the memory
    allocated before it (every row's model stays resident)."""
    fake = _FakeAllocator(monkeypatch, 500 * 2**20)
    mb = 2**20
    big = Row(config='big.py', fused=True, model=None,
              run=lambda x: fake.use(300 * mb, resident=20 * mb))
    small = Row(config='small.py', fused=True, model=None,
                run=lambda x: fake.use(10 * mb))
    monkeypatch.setattr(interleaved, 'sync', lambda device: None)
    monkeypatch.setattr(timing, '_timing_input',
                        lambda options: torch.zeros(1))
    options = BenchmarkOptions(device='cuda', warmup=0, iters=1, rounds=2)
    timing._time_rows([big, small], options, None)
    assert big.peak_mem_mb == 820 and big.peak_mem_delta_mb == 300
    # allocated before the small row: 500 + 2 x 20 resident
    assert small.peak_mem_mb == 550 and small.peak_mem_delta_mb == 10
    assert len(big.latencies) == len(small.latencies) == 2


# --------------------------------------------------------------------------
# 5. onnxruntime on CUDA: the device's provider, named in the row


def test_onnxruntime_providers_take_the_runs_device(monkeypatch):
    from repvgg_seg.backends.onnxruntime import onnxruntime_providers
    from repvgg_seg.bench import precision
    assert onnxruntime_providers('cpu') == ['CPUExecutionProvider']
    assert onnxruntime_providers('cuda:1', tf32=False) == [
        ('CUDAExecutionProvider', {'device_id': 1, 'use_tf32': 0})]
    # 'cuda': torch's current device
    monkeypatch.setattr(torch.cuda, 'current_device', lambda: 3)
    assert onnxruntime_providers('cuda', tf32=True) == [
        ('CUDAExecutionProvider', {'device_id': 3, 'use_tf32': 1})]
    # TF32 unless told: as torch's cuDNN convs (the benchmark's setting)
    with precision.cuda_precision_settings('cuda'):
        assert onnxruntime_providers('cuda:0')[0][1]['use_tf32'] == 0
    with precision.cuda_precision_settings('cuda', tf32=True):
        assert onnxruntime_providers('cuda:0')[0][1]['use_tf32'] == 1
    for device in ('gpu', 'cuda:first', 'cpu:1'):
        with pytest.raises(InputError, match='valid: cpu, cuda, cuda:N'):
            onnxruntime_providers(device)


@pytest.fixture
def tiny_onnx(tiny_model, tmp_path):
    pytest.importorskip('onnxruntime')
    from repvgg_seg.deploy.export import export_onnx_file
    path = str(tmp_path / 'tiny.onnx')
    export_onnx_file(LogitsModule(tiny_model).eval(), path, (2, 3, 64, 64))
    return path


def test_onnxruntime_on_cpu_names_its_provider(tiny_model, tiny_onnx):
    from repvgg_seg.engines import RunOptions
    from repvgg_seg.engines.exported import OnnxRuntimeEngine
    run = OnnxRuntimeEngine().file_runner(tiny_onnx, RunOptions(threads=1))
    assert run.info == {'provider': 'CPUExecutionProvider'}
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    out = run(x)
    assert out.device == torch.device('cpu') and out.shape == (2, 19, 64, 64)
    with torch.no_grad():
        expected = LogitsModule(tiny_model).eval()(x)
    assert (out - expected).abs().max() <= 1e-4 * expected.abs().max()


def test_onnxruntime_without_a_cuda_provider_is_refused(tiny_onnx):
    import onnxruntime as ort

    from repvgg_seg.engines import RunOptions
    from repvgg_seg.engines.exported import OnnxRuntimeEngine
    from repvgg_seg.errors import UnavailableError
    if 'CUDAExecutionProvider' in ort.get_available_providers():
        pytest.skip('this onnxruntime has a CUDA provider')
    with pytest.raises(UnavailableError,
                       match='this onnxruntime has no CUDA provider'):
        OnnxRuntimeEngine().file_runner(tiny_onnx,
                                        RunOptions(device='cuda:1'))


# --------------------------------------------------------------------------
# 6. CPU threads on CPU rows only; the CPU run's records


def test_gpu_rows_and_setup_report_no_cpu_threads(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'get_device_name',
                        lambda device=None: 'a GPU')
    row = Row(config='tiny.py', fused=True, model=None,
              latencies=[0.01, 0.02, 0.03])
    cuda = BenchmarkOptions(device='cuda:0', threads=4)
    assert timing._row_result(row, cuda, None)['threads'] is None
    setup = host.setup_record([row], cuda, [])
    assert setup['threads'] is None and setup['gpu'] == 'a GPU'
    assert 'reset per row' in setup['memory_note']
    cpu = BenchmarkOptions(threads=2)
    assert timing._row_result(row, cpu, None)['threads'] == 2
    assert host.setup_record([row], cpu, [])['threads'] == 2


def test_cpu_benchmark_records_no_tf32_and_the_onnxruntime_provider(
        tiny_config):
    pytest.importorskip('onnxruntime')
    from repvgg_seg.bench import format_table
    result = benchmark([tiny_config], BenchmarkOptions(
        fuse='yes', shape=(64, 64), engines=('torch', 'onnxruntime'),
        warmup=0, iters=1, rounds=1, threads=1))
    setup = result['setup']
    assert setup['tf32'] is None and setup['threads'] == 1
    assert setup['precision_settings']['note'] == 'CPU: no TF32 (nothing ' \
        'set)'
    rows = {r['engine']: r for r in result['rows']}
    assert rows['onnxruntime']['provider'] == 'CPUExecutionProvider'
    assert rows['onnxruntime']['agreement']['max_rel_error'] < 1e-4
    assert rows['torch']['threads'] == 1
    assert 'device cpu, 1 threads;' in format_table(result)


# --------------------------------------------------------------------------
# GPU: the benchmark's rows on CUDA (pytest -m gpu)


def _gpu_options(**kwargs):
    return BenchmarkOptions(fuse='yes', shape=(64, 64), batch_size=16,
                            device='cuda', warmup=1, iters=2, rounds=2,
                            **kwargs)


@pytest.mark.gpu
def test_gpu_logits_module_cuda_moves_the_preprocessor(tiny_model):
    module = LogitsModule(tiny_model).cuda()
    assert tiny_model.data_preprocessor.device.type == 'cuda'
    window = ImageWindows.generated(tiny_model, [0], (64, 64)).first()
    assert window.device.type == 'cuda'
    with torch.no_grad():
        assert module(window).device.type == 'cuda'
    module.cpu()
    assert tiny_model.data_preprocessor.device == torch.device('cpu')


@pytest.mark.gpu
def test_gpu_torch_rows_fp32_fp16_channels_last(tiny_config):
    from repvgg_seg.bench import precision
    before = precision.tf32_flags()
    result = benchmark([tiny_config], _gpu_options(
        precisions=('fp32', 'fp16'), layouts=('nchw', 'cl')))
    setup = result['setup']
    # fp32 rows ran as IEEE fp32, recorded; the flags are back after
    assert setup['tf32'] is False
    assert setup['precision_settings']['cudnn_allow_tf32'] is False
    assert setup['precision_settings']['cuda_matmul_allow_tf32'] is False
    assert precision.tf32_flags() == before
    assert setup['threads'] is None and setup['gpu']
    rows = {(r['precision'], r['layout']): r for r in result['rows']}
    assert set(rows) == {('fp32', 'nchw'), ('fp32', 'cl'), ('fp16', 'nchw'),
                         ('fp16', 'cl')}
    for key, row in rows.items():
        assert row['device'] == 'cuda' and row['threads'] is None, key
        assert row['batch_size'] == 16 and row['latency_ms'] > 0, key
        # the row's activations were allocated on the GPU: it ran there
        assert row['peak_mem_delta_mb'] > 0, key
        assert row['peak_mem_mb'] >= row['peak_mem_delta_mb'], key
    # agreement with the fp32 NCHW rows: the same fp32 in another layout,
    # fp16 within half precision (a random-weight model's argmax ties flip
    # a few pixels)
    assert rows[('fp32', 'cl')]['agreement']['max_rel_error'] < 1e-4
    assert rows[('fp32', 'cl')]['agreement']['argmax_agreement_pct'] > 99.9
    for layout in ('nchw', 'cl'):
        agree = rows[('fp16', layout)]['agreement']
        assert 0 < agree['max_rel_error'] < 0.05, layout
        assert agree['argmax_agreement_pct'] >= 90, layout


@pytest.mark.gpu
def test_gpu_onnxruntime_row_runs_on_the_cuda_provider(tiny_config):
    ort = pytest.importorskip('onnxruntime')
    if 'CUDAExecutionProvider' not in ort.get_available_providers():
        pytest.skip('this onnxruntime has no CUDA provider '
                    '(onnxruntime-gpu)')
    result = benchmark([tiny_config], _gpu_options(
        engines=('torch', 'onnxruntime')))
    rows = {r['engine']: r for r in result['rows']}
    row = rows['onnxruntime']
    assert row['provider'] == 'CUDAExecutionProvider'
    assert row['device'] == 'cuda' and row['threads'] is None
    assert row['batch_size'] == 16
    # its logits are written into a tensor torch allocates on the device
    assert row['peak_mem_delta_mb'] > 0
    # fp32 both sides (onnxruntime's TF32 off as torch's)
    assert row['agreement']['max_rel_error'] < 1e-4
    assert row['agreement']['argmax_agreement_pct'] > 99.9
    assert result['setup']['tf32'] is False


@pytest.mark.gpu
def test_gpu_onnxruntime_runner_keeps_the_logits_on_the_device(
        tiny_model, tiny_onnx):
    import onnxruntime as ort

    from repvgg_seg.bench import precision
    from repvgg_seg.engines import RunOptions
    from repvgg_seg.engines.exported import OnnxRuntimeEngine
    if 'CUDAExecutionProvider' not in ort.get_available_providers():
        pytest.skip('this onnxruntime has no CUDA provider')
    device = f'cuda:{torch.cuda.device_count() - 1}'
    with precision.cuda_precision_settings(device):
        run = OnnxRuntimeEngine().file_runner(tiny_onnx,
                                              RunOptions(device=device))
        assert run.info == {'provider': 'CUDAExecutionProvider'}
        assert run.session.get_provider_options()[
            'CUDAExecutionProvider']['device_id'] == device.split(':')[1]
        x = torch.randn(2, 3, 64, 64, device=device)
        out = run(x)
        assert out.device == torch.device(device)
        with torch.no_grad():
            expected = LogitsModule(tiny_model).to(device).eval()(x)
    assert (out - expected).abs().max() <= 1e-4 * expected.abs().max()
