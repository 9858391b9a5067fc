"""Inference speed of segmentors (and classifiers), measured interleaved:
:func:`benchmark` and its timing loop. The options are in
:mod:`.options`, the rows (models, runners, INT8 calibration) in
:mod:`.rows`, the setup record in :mod:`.host`.

What is timed
-------------
One row is one (config, fused or not) variant. Each timed sample is one
forward pass of a batch in test mode: a segmentor's whole-image forward
(backbone, decode head; no auxiliary head, no sliding window) **plus** the
bilinear resize of the logits to the input size
(:class:`repvgg_seg.apis.build.LogitsModule`); for the onnxruntime/OpenVINO
engines the same graph exported to ONNX. Preprocessing (decoding,
normalization) is **excluded**: the inputs are generated tensors, created
once. The paper's setting is the default: 713x713, batch 1.

All rows are measured in one process, **interleaved**: after a warm-up of
every row, each round runs ``iters`` timed passes of every row in turn
(round-robin, :func:`repvgg_seg.engines.interleaved.round_robin`), so a
background load or a clock change affects all rows alike. Each row reports
the median and the inter-quartile range (and min / max) of its ``rounds x
iters`` latencies, images/s from the median, peak memory, GMACs
(:mod:`repvgg_seg.bench.complexity`, multiply-adds of the model as run),
achieved GFLOP/s (2 FLOPs per MAC) and its speed ratio to the first row.
With ``peak`` the achieved GFLOP/s are also given as a share of the
measured peak of the row's precision (``peak_pct``: the fastest of a large
matmul, a 1x1 conv and the reference conv, see
:mod:`repvgg_seg.bench.peak`) and of the reference conv (``ref_conv_pct``:
a 512->512 3x3 conv on a 90x90 map, batch 1, same precision and memory
layout); every such kernel is timed once per round, interleaved with the
rows, and its median used.

INT8 (``int8``, the OpenVINO engine): the exported model quantized by NNCF
on the run's images (``images``; at most ``calib_images`` of them) or,
without images, on generated ones (for speed only; the setup
notes say so). Each INT8 row reports how many of its convs run in INT8
(``int8_convs`` of ``convs``, from the kernels OpenVINO chose), so a
silent fp32 fallback shows.

Reduced precision (``bf16``/``fp16``: weights converted once, forward under
``torch.autocast``) and the non-torch engines also report their agreement with
the fp32 torch model: the max relative logit error (max abs difference over
the max abs fp32 logit) and the pixel argmax agreement (%), on a synthetic
image or on given images (files or folders, e.g. a trained model's val set:
the agreement is pooled over all their pixels, the error is the worst
image's).

Peak memory: on CPU the process's peak RSS (``VmHWM``, reset per row through
``/proc/self/clear_refs`` where the kernel allows it) while the row runs, and
its increase over the RSS before the row (``peak_mem_delta_mb``: activations
and workspace; every row's model stays resident, so the absolute figure
includes them all); on CUDA the same from the caching allocator
(``torch.cuda.max_memory_allocated``, reset per row, over
``torch.cuda.memory_allocated`` before the row).

On CUDA (``device='cuda'`` or ``'cuda:N'``) every row runs on the device:
the reference model, its data preprocessor and the agreement images move
with it, onnxruntime rows run on its CUDA provider with their inputs and
outputs bound on the device (the provider that ran is in the row's
``provider``), and fp32 is IEEE fp32: TF32 off for cuDNN and cuBLAS
(``tf32=True`` turns it on; recorded in the setup's ``tf32``, see
:mod:`repvgg_seg.bench.precision`). CPU thread counts are CPU rows' only
(``threads`` is ``None`` on CUDA).
"""
import statistics
import tempfile
from typing import List, Optional, Sequence

import numpy as np
import torch
from mmengine.logging import print_log

from ..engines import ENGINES, interleaved
from ..engines.interleaved import round_robin, seconds_per_call
from ..errors import InputError
from ..evaluation.windows import windows_agreement
from .host import setup_record
from .memory import MemoryMeter
from .options import BENCH_ENGINES, PRECISIONS, BenchmarkOptions
from .peak import (MeasuredPeak, format_peak, peak_kernels, peak_precision,
                   peak_sizes, reduced_precision_supported, row_shares)
from .precision import cuda_precision_settings
from .rows import Row, make_rows, runnable_combinations


def benchmark(configs: Sequence[str],
              options: Optional[BenchmarkOptions] = None,
              checkpoints: Optional[Sequence[Optional[str]]] = None,
              cfg_options: Optional[dict] = None,
              irs: Optional[Sequence[Optional[str]]] = None) -> dict:
    """Measure every row interleaved; see the module docstring.

    ``irs``: per config, an OpenVINO IR (e.g. from ``tools/quantize.py``)
    timed as it is, in a row of its own beside the config's rows.
    Combinations an engine cannot run are skipped with a note when several
    were asked for, refused otherwise. Returns ``{'setup': ..., 'peak':
    ..., 'reference_conv': ..., 'rows': [...]}`` (the last two ``None``
    without ``options.peak``).
    """
    options = (options or BenchmarkOptions()).validated()
    if irs and len(irs) > len(configs):
        raise InputError(f'{len(irs)} IRs for {len(configs)} configs; give '
                         'at most one per config')
    if irs and any(irs) and options.device != 'cpu':
        raise InputError('--ir runs on OpenVINO\'s CPU plugin: benchmark it '
                         'with --device cpu')
    if irs:
        ENGINES['openvino'].require()
        for ir in irs:
            if ir:
                ENGINES['openvino'].check_weights(ir)
    combos, notes = runnable_combinations(options)
    for note in notes:
        print_log(note, logger='current', level=30)
    for engine in {engine for engine, _, _ in combos}:
        ENGINES[engine].require()
    for engine, precision, _ in combos:
        ENGINES[engine].require_precision(precision)
    for precision in options.precisions:
        if not reduced_precision_supported(precision, options.device):
            print_log(f'{precision} has no native kernels on this '
                      f'{options.device} ' + (
                          '(no bf16 support on this GPU)'
                          if options.device.startswith('cuda') else
                          '(oneDNN reports no AVX512-BF16/AMX/FP16 support)')
                      + ': its convs are emulated and far slower than fp32',
                      logger='current', level=30)
    previous_threads = torch.get_num_threads()
    previous_cudnn = torch.backends.cudnn.benchmark
    if options.threads:  # CPU only (None on CUDA)
        torch.set_num_threads(options.threads)
    # fixed input shape: let cuDNN pick its fastest kernels during the
    # warm-up passes (the configs' env_cfg.cudnn_benchmark, as mmseg does)
    torch.backends.cudnn.benchmark = options.device.startswith('cuda')
    try:
        with tempfile.TemporaryDirectory(prefix='repvgg_bench_') as tmp, \
                cuda_precision_settings(options.device,
                                        options.tf32) as precision:
            print_log(f'precision: {precision["note"]}', logger='current')
            rows = make_rows(configs, options, combos, checkpoints,
                             cfg_options, tmp, notes, irs)
            result = _measure(rows, options, notes)
            result['setup'].update(tf32=precision['tf32'],
                                   precision_settings=precision)
            return result
    finally:
        torch.set_num_threads(previous_threads)
        torch.backends.cudnn.benchmark = previous_cudnn



def _check_agreement(rows: List[Row], options: BenchmarkOptions) -> None:
    """Each non-reference row's agreement with the fp32 torch model, pooled
    over the windows of its images (decoded per row, not held: a val set
    at 713x713 is hundreds of MB)."""
    for row in rows:
        if row.is_reference and not options.compile:
            continue
        row.agreement = windows_agreement(row.images, row.model, row.run,
                                          progress=len(row.images.items) > 1)
        count = len(row.images.items)
        print_log(f'{row.label}: max rel logit error '
                  f'{row.agreement["max_rel_error"]:.3g}, argmax agreement '
                  f'{row.agreement["argmax_agreement_pct"]:.3f}% '
                  f'({count} image{"s" if count > 1 else ""}, '
                  f'{row.agreement["images"]} windows, worst '
                  f'{row.agreement["min_image_agreement_pct"]:.3f}%)',
                  logger='current')


def _make_peak(rows: List[Row], device: str, notes: List[str],
               threads: Optional[int] = None) -> MeasuredPeak:
    """The kernels of every precision the rows need (the reference conv in
    each of their layouts), warmed up once."""
    ref_layouts = {}
    for row in rows:
        precision = peak_precision(row.precision)
        layouts = ref_layouts.setdefault(precision, [])
        if precision != 'int8' and row.layout not in layouts:
            layouts.append(row.layout)
    # an emulated (no native kernels) bf16/fp16 kernel takes minutes and is
    # no peak of anything: skipped
    skipped = [p for p in ref_layouts
               if not reduced_precision_supported(p, device)]
    if skipped:
        notes.append(f'no measured peak or reference conv for '
                     f'{", ".join(skipped)}: no native kernels on this '
                     f'{device}')
    peak = MeasuredPeak(peak_kernels(
        {p: v for p, v in ref_layouts.items() if p not in skipped}, device,
        threads), device)
    peak.step(record=False)  # warm-up
    peak.calibrate()  # on CUDA: calls per sample
    if device.startswith('cuda'):
        sizes = peak_sizes(device)
        notes.append(
            f'peak on {device}: kernels sized for the GPU (matmul '
            f'{sizes.matmul}^3, 1x1 conv {sizes.conv1x1[0]} channels at '
            f'{sizes.conv1x1[1]}x{sizes.conv1x1[1]}); each sample runs a '
            'kernel back to back for >= '
            f'{peak.min_sample_s * 1e3:.0f} ms (' + ', '.join(
                f'{k.id} x{k.calls}' for k in peak.kernels.values()) + ')')
    return peak


def _timing_input(options: BenchmarkOptions) -> torch.Tensor:
    """The generated batch every row is timed on, on the run's device."""
    gen = torch.Generator().manual_seed(options.seed)
    return torch.randn(options.batch_size, 3, *options.shape,
                       generator=gen).to(options.device)


def _time_rows(rows: List[Row], options: BenchmarkOptions,
               machine_peak: Optional[MeasuredPeak]) -> None:
    """Warm up every row, then time them round-robin, each round after one
    sample of every kernel of ``machine_peak``; each row's peak memory is
    reset before its passes of a round (every row's model stays resident:
    its own is the increase over what was in use before)."""
    device = options.device
    x = _timing_input(options)
    meter = MemoryMeter(device)
    print_log(f'warm-up: {options.warmup} passes per row', logger='current')
    for row in rows:
        for _ in range(options.warmup):
            row.run(x)
        interleaved.sync(device)

    def turn(row: Row):
        def passes() -> List[float]:
            before = meter.start()
            latencies = [seconds_per_call(lambda: row.run(x), device=device)
                         for _ in range(options.iters)]
            peak = meter.peak()
            row.peak_mem_mb = max(row.peak_mem_mb, peak)
            row.peak_mem_delta_mb = max(row.peak_mem_delta_mb, peak - before)
            return latencies
        return passes

    kernels = machine_peak.turns() if machine_peak is not None else []

    def log(r: int, samples: List[List[float]]) -> None:
        print_log(f'round {r + 1}/{options.rounds}: ' + ', '.join(
            f'{row.label} {statistics.median(s) * 1e3:.0f} ms'
            for row, s in zip(rows, samples[len(kernels):])),
            logger='current')

    samples = round_robin(kernels + [turn(row) for row in rows],
                          options.rounds, after_round=log)
    if machine_peak is not None:
        machine_peak.add(samples[:len(kernels)])
    for row, latencies in zip(rows, samples[len(kernels):]):
        row.latencies.extend(latencies)


def _quantiles(samples: Sequence[float]):
    q1, med, q3 = np.percentile(np.asarray(samples, np.float64),
                                [25, 50, 75])
    return float(q1), float(med), float(q3)


def _row_result(row: Row, options: BenchmarkOptions,
                measured: Optional[dict]) -> dict:
    q1, med, q3 = _quantiles(row.latencies)
    ips = options.batch_size / med
    result = dict(
        config=row.config, name=row.name, fused=row.fused,
        engine=row.engine, precision=row.precision, device=options.device,
        ir=row.ir, streams=options.streams,
        layout=row.layout, channels_last=row.layout == 'cl',
        compile=options.compile,
        # CPU threads: a CPU row's setting only (None on CUDA)
        threads=None if options.device.startswith('cuda')
        else options.threads,
        batch_size=options.batch_size, shape=list(options.shape),
        images_per_s=ips, latency_ms=med * 1e3, latency_ms_q1=q1 * 1e3,
        latency_ms_q3=q3 * 1e3, latency_ms_iqr=(q3 - q1) * 1e3,
        latency_ms_min=min(row.latencies) * 1e3,
        latency_ms_max=max(row.latencies) * 1e3,
        samples=len(row.latencies), peak_mem_mb=row.peak_mem_mb,
        peak_mem_delta_mb=row.peak_mem_delta_mb, params=row.params,
        gmacs=row.gmacs, gflops_per_s=2 * row.gmacs * ips,
        agreement=row.agreement,
        **{k: v for k, v in row.info.items() if k != 'ir'})
    result.update(row_shares(result['gflops_per_s'], row.precision,
                             row.layout, measured))
    return result


def _measure(rows: List[Row], options: BenchmarkOptions,
             notes: List[str]) -> dict:
    _check_agreement(rows, options)
    peak = (_make_peak(rows, options.device, notes, options.threads)
            if options.peak else None)
    _time_rows(rows, options, peak)
    measured = peak.result() if peak is not None else None
    for line in format_peak(measured) if measured else []:
        print_log(line, logger='current')
    results = [_row_result(row, options, measured) for row in rows]
    for result in results:
        result['speed_ratio'] = (result['images_per_s']
                                 / results[0]['images_per_s'])
    return dict(setup=setup_record(rows, options, notes),
                peak=measured and measured['peak'],
                reference_conv=measured and measured['reference_conv'],
                rows=results)


__all__ = ['BENCH_ENGINES', 'PRECISIONS', 'BenchmarkOptions', 'Row',
           'benchmark']
