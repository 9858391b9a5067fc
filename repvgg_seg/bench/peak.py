"""The machine's measured peak per precision, and the reference conv.

A row's achieved GFLOP/s are reported as a share of the **measured peak**
of its precision: the fastest (highest median GFLOP/s, 2 FLOPs per MAC) of
a few large compute-bound kernels, each timed once per round in the same
interleaved rounds as the rows (:meth:`MeasuredPeak.step`):

* fp32 / bf16 / fp16 (PyTorch: oneDNN, MKL): a square matmul, a 1x1 conv
  (channels-last) and the reference conv in each layout the rows use;
  bf16/fp16 only where :func:`reduced_precision_supported` (emulated
  kernels are no peak of anything);
* int8 (NNCF-quantized, OpenVINO's CPU plugin, the INT8 rows' engine):
  the same matmul (a ``Linear``), 1x1 conv and reference conv, each
  quantized by :func:`repvgg_seg.quantization.ptq.quantize_module`, and
  refused if its kernel does not run in INT8.

On CUDA the kernels are sized for a GPU (:data:`CUDA_PEAK_SIZES`: on a
large one the CPU's sizes would time mostly launch and sync) and each
timed sample runs a kernel several times back to back: as many
calls as fill :data:`CUDA_MIN_SAMPLE_S`, counted once in the warm-up
(:meth:`MeasuredPeak.calibrate`); a sample's time is per call. fp32 kernels
run under the benchmark's TF32 setting
(:func:`repvgg_seg.bench.precision.cuda_precision_settings`), like its rows.

The peak is what these kernels reach here, not a hardware bound: a row can
exceed it (Winograd rows do fewer multiplications than their MACs; a
model's convs may suit the plugin better than these shapes). The
**reference conv** (one 512->512 3x3 conv, pad 1, at 90x90, batch 1, the
RepVGG models' main op) is kept beside it as what it is: one conv of that
shape, per precision and memory layout (``fp32-nchw``, ``bf16-cl``,
``int8-nchw`` ...).
"""
import functools
import math
import statistics
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmengine.logging import print_log

from ..engines.base import DTYPES
from ..engines.exported import INT8_PRECISIONS
from ..engines.interleaved import Turn, round_robin, seconds_per_call


def reduced_precision_supported(precision: str, device: str = 'cpu') -> bool:
    """Whether ``precision`` has native kernels here (on CPU: oneDNN's
    check for AVX512-BF16/AMX or AVX512-FP16; without them bf16/fp16 convs
    are emulated and much slower than fp32). INT8 (OpenVINO, CPU only) has
    kernels on every CPU OpenVINO runs on (fastest with AVX512-VNNI/AMX)."""
    if precision == 'fp32':
        return True
    if precision == 'int8':
        return not device.startswith('cuda')
    if device.startswith('cuda'):
        return precision == 'fp16' or torch.cuda.is_bf16_supported()
    try:
        if precision == 'bf16':
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    except (AttributeError, RuntimeError):
        return False


def peak_precision(precision: str) -> str:
    """The precision whose peak a row is compared with: its own, ``int8``
    for every INT8 precision (``int8-bf16`` keeps its convs in INT8)."""
    return 'int8' if precision in INT8_PRECISIONS else precision


def ref_conv_key(precision: str, layout: str) -> str:
    """The reference conv a row is compared with: ``fp32-nchw``,
    ``bf16-cl``, ``int8-nchw`` (OpenVINO picks its own layout)."""
    precision = peak_precision(precision)
    return f'{precision}-{"nchw" if precision == "int8" else layout}'


@dataclass(frozen=True)
class KernelSizes:
    """The kernels' sizes: the matmul's M = N = K, and (channels, map
    size) of the 1x1 conv and of the reference 3x3 conv. The defaults are
    compute-bound and take a fraction of a second a call on a CPU (figures
    in docs/benchmarks.md)."""
    matmul: int = 1536
    conv1x1: Tuple[int, int] = (1024, 64)
    conv3x3: Tuple[int, int] = (512, 90)


#: the sizes the benchmark uses on CPU (module level so tests can shrink
#: them)
PEAK_SIZES = KernelSizes()
#: on CUDA: a matmul and a 1x1 conv large enough to keep a big GPU's
#: tensor cores busy for milliseconds (estimates in docs/benchmarks.md);
#: the reference conv keeps its shape (it is one conv of the models, not a
#: size to fill the device)
CUDA_PEAK_SIZES = KernelSizes(matmul=8192, conv1x1=(2048, 128),
                              conv3x3=(512, 90))
#: on CUDA a timed sample of a kernel runs it back to back for at least
#: this long (launch and sync overheads then weigh < 1%)
CUDA_MIN_SAMPLE_S = 0.02


def peak_sizes(device: str = 'cpu') -> KernelSizes:
    """The kernels' sizes for ``device``: :data:`CUDA_PEAK_SIZES` on CUDA,
    else :data:`PEAK_SIZES`."""
    return CUDA_PEAK_SIZES if str(device).startswith('cuda') else PEAK_SIZES


@dataclass
class Kernel:
    """One timed kernel: ``name`` (``matmul``, ``conv1x1-cl``,
    ``conv3x3-nchw`` ...), its ``precision``, its ``shape`` in words, its
    multiply-adds and a call that runs it once. ``ref_key``: set on the
    reference conv (``fp32-nchw`` ...). ``calls``: how many calls one
    timed sample runs (see :meth:`MeasuredPeak.calibrate`)."""
    name: str
    precision: str
    shape: str
    macs: int
    run: Callable[[], None]
    ref_key: Optional[str] = None
    calls: int = 1

    @property
    def id(self) -> str:
        return f'{self.precision} {self.name}'


def _torch_call(fn, *args, **kwargs) -> Callable[[], None]:
    def run():
        with torch.inference_mode():
            fn(*args, **kwargs)
    return run


def _openvino_runner(module: torch.nn.Module, x: torch.Tensor,
                     threads: Optional[int]) -> Tuple[Callable, list]:
    """``module`` quantized to INT8 by NNCF (calibrated on ``x`` and three
    random inputs like it) and compiled by OpenVINO: a call that runs it
    once on ``x``, and the kernels OpenVINO chose (``openvino_kernels``)."""
    from ..backends.openvino import openvino_compile, openvino_kernels
    from ..quantization.ptq import quantize_module
    gen = torch.Generator().manual_seed(1)
    calibration = [x] + [torch.randn(x.shape, generator=gen)
                         for _ in range(3)]
    quantized = quantize_module(module.eval(), tuple(x.shape), calibration)
    compiled = openvino_compile(quantized, 'int8', threads)
    request = compiled.create_infer_request()
    inputs = {0: x.numpy()}
    return (lambda: request.infer(inputs)), openvino_kernels(compiled)


def _int8_runner(module: torch.nn.Module, x: torch.Tensor,
                 threads: Optional[int], node_types: Sequence[str],
                 what: str) -> Callable[[], None]:
    """:func:`_openvino_runner`; raises unless its nodes of
    ``node_types`` run on INT8 kernels."""
    run, nodes = _openvino_runner(module, x, threads)
    kernels = [kernel for _, node_type, kernel in nodes
               if node_type in node_types]
    if not kernels or not all('i8' in k.lower() for k in kernels):
        raise RuntimeError(f'the INT8 peak {what} does not run in INT8: '
                           f'kernels {kernels}')
    return run


def int8_conv_runner(conv: torch.nn.Conv2d, x: torch.Tensor,
                     threads: Optional[int] = None) -> Callable[[], None]:
    """The conv quantized and compiled (see :func:`_openvino_runner`);
    raises if OpenVINO chose an fp32 kernel for it."""
    return _int8_runner(conv, x, threads, ('Convolution', ), 'conv')


def int8_matmul_runner(linear: torch.nn.Linear, x: torch.Tensor,
                       threads: Optional[int] = None) -> Callable[[], None]:
    """``linear(x)`` (a MatMul) quantized and compiled; raises unless
    OpenVINO chose an INT8 kernel for it."""
    return _int8_runner(linear, x, threads, ('MatMul', 'FullyConnected'),
                        'matmul')


def peak_kernels(ref_layouts: Dict[str, Sequence[str]], device: str = 'cpu',
                 threads: Optional[int] = None,
                 sizes: Optional[KernelSizes] = None) -> List[Kernel]:
    """The kernels of each precision in ``ref_layouts`` (``{precision:
    layouts of its reference conv}``): matmul, 1x1 conv, reference conv per
    layout (see the module docstring); ``sizes``: by default
    :func:`peak_sizes` of ``device``."""
    sizes = sizes or peak_sizes(device)
    gen = torch.Generator().manual_seed(0)
    n = sizes.matmul
    c1, s1 = sizes.conv1x1
    c3, s3 = sizes.conv3x3
    a, b = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen)
    x1 = torch.randn(1, c1, s1, s1, generator=gen)
    conv1 = torch.nn.Conv2d(c1, c1, 1)
    x3 = torch.randn(1, c3, s3, s3, generator=gen)
    conv3 = torch.nn.Conv2d(c3, c3, 3, padding=1)
    with torch.no_grad():
        conv3.weight.copy_(torch.randn(conv3.weight.shape, generator=gen)
                           * 0.02)
    shapes = dict(matmul=(f'{n}x{n} @ {n}x{n}', n ** 3),
                  conv1x1=(f'{c1}->{c1} 1x1 conv at {s1}x{s1}, batch 1',
                           c1 * c1 * s1 * s1),
                  conv3x3=(f'{c3}->{c3} 3x3 conv at {s3}x{s3}, batch 1',
                           c3 * c3 * 9 * s3 * s3))
    kernels = []

    def add(name, precision, run, ref_key=None):
        shape, macs = shapes[name.split('-')[0]]
        kernels.append(Kernel(name, precision, shape, macs, run, ref_key))

    for precision, layouts in ref_layouts.items():
        if precision == 'int8':
            linear = torch.nn.Linear(n, n)
            with torch.no_grad():
                linear.weight.copy_(b.T)
            add('matmul', precision, int8_matmul_runner(linear, a, threads))
            add('conv1x1', precision, int8_conv_runner(conv1, x1, threads))
            add('conv3x3', precision, int8_conv_runner(conv3, x3, threads),
                ref_conv_key(precision, 'nchw'))
            continue
        cl = torch.channels_last

        def on(t, fmt=torch.contiguous_format, dtype=DTYPES[precision]):
            return t.to(device, dtype).contiguous(memory_format=fmt)

        add('matmul', precision, _torch_call(torch.matmul, on(a), on(b)))
        add('conv1x1-cl', precision, _torch_call(
            F.conv2d, on(x1, cl), on(conv1.weight.detach(), cl),
            on(conv1.bias.detach())))
        for layout in layouts:
            fmt = cl if layout == 'cl' else torch.contiguous_format
            add(f'conv3x3-{layout}', precision, _torch_call(
                F.conv2d, on(x3, fmt), on(conv3.weight.detach(), fmt),
                on(conv3.bias.detach()), padding=1),
                ref_conv_key(precision, layout))
    return kernels


class MeasuredPeak:
    """The measured peak per precision and the reference conv(s), from
    ``kernels`` (see :func:`peak_kernels`). :meth:`step` times one sample
    of every kernel (:attr:`Kernel.calls` calls); the benchmark calls it
    once per round, interleaved with the rows; :meth:`result` takes the
    medians. ``times`` holds each kernel's samples (seconds per call), by
    :attr:`Kernel.id`. ``min_sample_s``: see :meth:`calibrate` (default:
    :data:`CUDA_MIN_SAMPLE_S` on CUDA, none on CPU, where one call of each
    kernel is long enough)."""

    def __init__(self, kernels: Sequence[Kernel], device: str = 'cpu',
                 min_sample_s: Optional[float] = None):
        self.device = device
        self.kernels = {k.id: k for k in kernels}
        self.times: Dict[str, List[float]] = {k: [] for k in self.kernels}
        if min_sample_s is None and str(device).startswith('cuda'):
            min_sample_s = CUDA_MIN_SAMPLE_S
        self.min_sample_s = min_sample_s

    def _sample(self, kernel: Kernel) -> float:
        """Seconds per call of ``kernel`` over one sample."""
        return seconds_per_call(kernel.run, kernel.calls, self.device)

    def turns(self) -> List[Turn]:
        """A turn per kernel (in the order of :attr:`kernels`) for
        :func:`~repvgg_seg.engines.interleaved.round_robin`: one sample."""
        def one_sample(kernel: Kernel) -> List[float]:
            return [self._sample(kernel)]
        return [functools.partial(one_sample, kernel)
                for kernel in self.kernels.values()]

    def add(self, samples: Sequence[Sequence[float]]) -> None:
        """Record the samples of the kernels' :meth:`turns`."""
        for kid, taken in zip(self.kernels, samples):
            self.times[kid].extend(taken)

    def step(self, record: bool = True) -> None:
        """One sample of every kernel (a warm-up unless ``record``)."""
        samples = round_robin(self.turns(), 1)
        if record:
            self.add(samples)

    def calibrate(self) -> None:
        """With ``min_sample_s``, set each kernel's calls per sample to
        fill it, from one call timed now (after a warm-up: the first call
        of a CUDA kernel includes cuDNN's/cuBLAS's set-up)."""
        if not self.min_sample_s:
            return
        for kernel in self.kernels.values():
            kernel.calls = 1
            once = max(self._sample(kernel), 1e-6)
            kernel.calls = max(1, math.ceil(self.min_sample_s / once))

    def result(self) -> dict:
        """``{'peak': {precision: {kernel, shape, gflops_per_s, latency_ms,
        samples, kernels: {name: the same for every kernel}}},
        'reference_conv': {key: {shape, gflops_per_s, latency_ms,
        samples}}}``; GFLOP/s are ``2 * MACs / median time``."""
        peak, reference = {}, {}
        for kid, kernel in self.kernels.items():
            median = statistics.median(self.times[kid])
            measured = dict(shape=kernel.shape, macs=kernel.macs,
                            gflops_per_s=2 * kernel.macs / median / 1e9,
                            latency_ms=median * 1e3,
                            samples=len(self.times[kid]),
                            calls_per_sample=kernel.calls)
            entry = peak.setdefault(kernel.precision, dict(kernels={}))
            entry['kernels'][kernel.name] = measured
            if kernel.ref_key:
                reference[kernel.ref_key] = measured
        for entry in peak.values():
            name, best = max(entry['kernels'].items(),
                             key=lambda item: item[1]['gflops_per_s'])
            entry.update(kernel=name, **{k: best[k] for k in (
                'shape', 'gflops_per_s', 'latency_ms', 'samples')})
        return dict(peak=peak, reference_conv=reference)


def row_shares(gflops_per_s: float, precision: str, layout: str,
               measured: Optional[dict]) -> dict:
    """A row's achieved GFLOP/s as a share of the measured peak of its
    precision (``peak_pct``, with the peak's kernel) and of its reference
    conv (``ref_conv_pct``); empty where neither was measured."""
    shares = {}
    if not measured:
        return shares
    peak = measured['peak'].get(peak_precision(precision))
    if peak:
        shares.update(peak_precision=peak_precision(precision),
                      peak_kernel=peak['kernel'],
                      peak_gflops_per_s=peak['gflops_per_s'],
                      peak_pct=100 * gflops_per_s / peak['gflops_per_s'])
    key = ref_conv_key(precision, layout)
    ref = measured['reference_conv'].get(key)
    if ref:
        shares.update(ref_conv_key=key,
                      ref_conv_gflops_per_s=ref['gflops_per_s'],
                      ref_conv_pct=100 * gflops_per_s / ref['gflops_per_s'])
    return shares


def format_peak(measured: dict) -> List[str]:
    """The measured peaks and reference convs as lines of text (none
    where nothing was measured)."""
    if not measured['peak']:
        return []
    lines = ['measured peak (fastest kernel of the precision, median over '
             'the rounds): ' + '; '.join(
                 f'{p} {v["gflops_per_s"]:.0f} GFLOP/s ({v["kernel"]}: '
                 f'{v["shape"]}; others: ' + ', '.join(
                     f'{k} {o["gflops_per_s"]:.0f}'
                     for k, o in v['kernels'].items() if k != v['kernel'])
                 + ')' for p, v in measured['peak'].items())]
    if measured['reference_conv']:
        shape = next(iter(measured['reference_conv'].values()))['shape']
        lines.append(f'reference conv ({shape}; int8: OpenVINO; not a '
                     'ceiling): ' + ', '.join(
                         f'{k} {v["gflops_per_s"]:.0f} GFLOP/s'
                         for k, v in measured['reference_conv'].items()))
    return lines


def measure_peak(ref_layouts: Optional[Dict[str, Sequence[str]]] = None,
                 device: str = 'cpu', warmup: int = 1, iters: int = 5,
                 threads: Optional[int] = None,
                 sizes: Optional[KernelSizes] = None) -> dict:
    """The measured peak on its own (see :class:`MeasuredPeak`): every
    kernel of ``ref_layouts`` (default ``{'fp32': ['nchw']}``) timed
    interleaved, ``warmup`` untimed rounds, then the median of ``iters``."""
    peak = MeasuredPeak(peak_kernels(ref_layouts or {'fp32': ['nchw']},
                                     device, threads, sizes), device)
    round_robin(peak.turns(), warmup)
    peak.calibrate()
    peak.add(round_robin(peak.turns(), iters))
    result = peak.result()
    for line in format_peak(result):
        print_log(line, logger='current')
    return result
