"""The machine's conv ceiling: what one large 3x3 conv achieves here, the
yardstick for a model's achieved GFLOP/s (``% of ceiling``).

The fp32/bf16/fp16 ceilings are PyTorch's conv; the INT8 one
(``int8-nchw``) is the same conv quantized by NNCF and run by OpenVINO's
CPU plugin, the engine of the INT8 rows (:func:`int8_conv_runner`)."""
import statistics
import time
from typing import Callable, Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from mmengine.logging import print_log

from ..engines.base import DTYPES


def sync(device: str) -> None:
    """Wait for the device's queued work (timing on CUDA needs it)."""
    if device.startswith('cuda'):
        torch.cuda.synchronize()


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


def ceiling_key(precision: str, layout: str) -> str:
    """The ceiling a row is compared with: ``fp32-nchw``, ``bf16-cl`` ..."""
    return f'{precision}-{layout}'


def int8_conv_runner(weight: torch.Tensor, bias: torch.Tensor,
                     x: torch.Tensor, threads: Optional[int] = None
                     ) -> Callable[[], None]:
    """The conv ``F.conv2d(x, weight, bias, padding=1)`` quantized to INT8
    by NNCF (calibrated on ``x`` and a few random inputs like it) and
    compiled by OpenVINO; returns a call that runs it once on ``x``."""
    from ..deploy.quantize import quantize_module
    from ..deploy.runtimes import openvino_compile
    conv = torch.nn.Conv2d(weight.shape[1], weight.shape[0], 3, padding=1)
    with torch.no_grad():
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)
    gen = torch.Generator().manual_seed(1)
    calibration = [x] + [torch.randn(x.shape, generator=gen)
                         for _ in range(3)]
    quantized, convs = quantize_module(conv.eval(), tuple(x.shape),
                                       calibration, threads=threads)
    if convs['int8_convs'] != convs['convs']:
        raise RuntimeError(f'the INT8 ceiling conv runs in fp32: '
                           f'{convs["kernels"]}')
    request = openvino_compile(quantized, 'int8',
                               threads).create_infer_request()
    inputs = {0: x.numpy()}
    return lambda: request.infer(inputs)


class ConvCeiling:
    """The machine's conv ceiling: GFLOP/s of one ``channels``->``channels``
    3x3 conv (pad 1) on a ``size`` x ``size`` map, batch 1, for each
    ``precision-layout`` key (``fp32-nchw``, ``bf16-cl`` ...; bf16/fp16:
    weights and input in that dtype; ``int8-nchw``: the conv quantized, on
    OpenVINO, see :func:`int8_conv_runner`). :meth:`step` times one pass
    of every key; the benchmark calls it in every round, interleaved with
    the rows, and reports the median."""

    def __init__(self, keys: Sequence[str], device: str = 'cpu',
                 channels: int = 512, size: int = 90,
                 threads: Optional[int] = None):
        self.device = device
        self.macs = channels * channels * 9 * size * size
        self.description = (f'{channels}->{channels} 3x3 conv at '
                            f'{size}x{size}, batch 1')
        gen = torch.Generator().manual_seed(0)
        weight = torch.randn(channels, channels, 3, 3, generator=gen) * 0.02
        bias = torch.randn(channels, generator=gen)
        x = torch.randn(1, channels, size, size, generator=gen)
        self.cases = {}
        for key in keys:
            precision, layout = key.split('-')
            if precision == 'int8':
                self.cases[key] = int8_conv_runner(weight, bias, x, threads)
                continue
            fmt = torch.channels_last if layout == 'cl' else \
                torch.contiguous_format
            dtype = DTYPES[precision]
            self.cases[key] = self._torch_conv(
                x.to(device, dtype).contiguous(memory_format=fmt),
                weight.to(device, dtype).contiguous(memory_format=fmt),
                bias.to(device, dtype))
        self.times = {key: [] for key in keys}

    @staticmethod
    def _torch_conv(x, weight, bias) -> Callable[[], None]:
        def run():
            with torch.inference_mode():
                F.conv2d(x, weight, bias, padding=1)
        return run

    def step(self, record: bool = True) -> None:
        for key, run in self.cases.items():
            sync(self.device)
            start = time.perf_counter()
            run()
            sync(self.device)
            if record:
                self.times[key].append(time.perf_counter() - start)

    def result(self) -> Dict[str, dict]:
        result = {}
        for key, samples in self.times.items():
            median = statistics.median(samples)
            result[key] = dict(gflops_per_s=2 * self.macs / median / 1e9,
                               latency_ms=median * 1e3, samples=len(samples),
                               conv=self.description)
        return result


def measure_ceiling(keys: Sequence[str] = ('fp32-nchw', 'fp32-cl',
                                           'bf16-cl'),
                    device: str = 'cpu', warmup: int = 2, iters: int = 5,
                    channels: int = 512, size: int = 90,
                    threads: Optional[int] = None) -> Dict[str, dict]:
    """The conv ceiling on its own (see :class:`ConvCeiling`): the keys
    measured interleaved, the median of ``iters`` passes each."""
    ceiling = ConvCeiling(keys, device, channels, size, threads)
    for step in range(warmup + iters):
        ceiling.step(record=step >= warmup)
    result = ceiling.result()
    print_log('conv ceiling: ' + ', '.join(
        f'{k} {v["gflops_per_s"]:.0f} GFLOP/s' for k, v in result.items()),
        logger='current')
    return result
