"""Inference speed of segmentors (and classifiers), measured interleaved.

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
(round-robin), so a background load or a clock change affects all rows
alike. Each row reports the median and the inter-quartile range (and min /
max) of its ``rounds x iters`` latencies, images/s from the median, peak
memory, GMACs (:mod:`repvgg_seg.bench.complexity`, multiply-adds of the
model as run), achieved GFLOP/s (2 FLOPs per MAC) and its speed ratio to
the first row. With ``peak`` the achieved GFLOP/s are also given as a
share of the measured peak of the row's precision (``peak_pct``: the
fastest of a large matmul, a 1x1 conv and the reference conv, see
:mod:`repvgg_seg.bench.peak`) and of the reference conv (``ref_conv_pct``:
a 512->512 3x3 conv on a 90x90 map, batch 1, same precision and memory
layout); every such kernel is timed once per round, interleaved with the
rows, and its median used.

INT8 (``int8``, the OpenVINO engine): the exported model quantized by NNCF
on the run's images (``images``; at most ``calib_images`` of them) or,
without images, on generated ones (for speed only; the setup
notes say so). Each INT8 row reports how many of its convs run in INT8
(``int8_convs`` of ``convs``, from OpenVINO's profile), so a silent fp32
fallback shows.

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
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field, replace
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
from mmengine.logging import print_log

from ..apis.build import LogitsModule, checked_shape, load_model
from ..config import as_config
from ..engines import ENGINES, RunOptions
from ..engines.exported import INT8_PRECISIONS
from ..errors import InputError, UnavailableError
from ..evaluation.agreement import image_files
from ..evaluation.windows import ImageWindows, windows_agreement
from ..models.convert import deploy_copy
from .complexity import model_complexity
from .memory import MemoryMeter
from .peak import (MeasuredPeak, format_peak, peak_kernels, peak_precision,
                   peak_sizes, reduced_precision_supported, row_shares, sync)
from .precision import cuda_precision_settings

PRECISIONS = ('fp32', 'bf16', 'fp16') + tuple(INT8_PRECISIONS)
#: the benchmark's engines: fusing is its own axis (``fuse``), so the
#: ``fused`` engine is the torch engine's fused rows
BENCH_ENGINES = tuple(name for name in ENGINES if name != 'fused')
LAYOUTS = ('nchw', 'cl')
FUSE_CHOICES = ('yes', 'no', 'both')


def _as_tuple(value) -> tuple:
    """A name or a list of names as a tuple."""
    return (value, ) if isinstance(value, str) else tuple(value)


@dataclass(frozen=True)
class BenchmarkOptions:
    """What a benchmark run measures and how.

    One row per (config, fused, engine, precision, layout) of the lists
    here (a single name is a list of one); ``layouts``: ``'nchw'`` and/or
    ``'cl'`` (channels-last).
    ``images``: files or folders for the agreement checks (default: one
    synthetic image), through the config's test pipeline and cut into the
    model's windows, resized to ``shape``. ``peak``: also measure the peak
    of each row's precision and the reference conv, and report each row's
    achieved GFLOP/s as a share of both. ``calib_images``: how many images
    INT8 rows are calibrated on.
    ``streams``: OpenVINO infer requests in flight (throughput mode: with
    ``batch_size`` N, each sample runs N windows in parallel requests;
    ``0`` lets OpenVINO's THROUGHPUT hint choose the streams).
    ``device``: ``cpu``, ``cuda`` or ``cuda:N``; ``threads``: CPU threads
    (CPU only; default all cores). ``tf32``: on CUDA, let fp32 convs and
    matmuls run in TF32 (default: off, IEEE fp32).
    """
    fuse: str = 'both'
    shape: Tuple[int, int] = (713, 713)
    batch_size: int = 1
    device: str = 'cpu'
    threads: Optional[int] = None
    engines: Sequence[str] = ('torch', )
    precisions: Sequence[str] = ('fp32', )
    layouts: Sequence[str] = ('nchw', )
    compile: bool = False
    warmup: int = 2
    iters: int = 3
    rounds: int = 3
    peak: bool = False
    images: Optional[Sequence[str]] = None
    calib_images: int = 20
    streams: Optional[int] = None
    seed: int = 0
    tf32: bool = False

    def validated(self) -> 'BenchmarkOptions':
        """These options checked, with the shape, the thread count and the
        image list resolved; raises :class:`InputError`."""
        lists = {name: _as_tuple(getattr(self, name))
                 for name in ('engines', 'precisions', 'layouts')}
        if self.fuse not in FUSE_CHOICES:
            raise InputError(f'fuse must be yes, no or both, got '
                             f'{self.fuse!r}')
        for what, values, valid in (('engine', lists['engines'],
                                     BENCH_ENGINES),
                                    ('precision', lists['precisions'],
                                     PRECISIONS),
                                    ('layout', lists['layouts'], LAYOUTS)):
            for value in values:
                if value not in valid:
                    raise InputError(f'unknown {what} {value!r}; valid: '
                                     f'{", ".join(valid)}')
        if (self.warmup < 0 or self.iters < 1 or self.rounds < 1
                or self.batch_size < 1 or self.calib_images < 1):
            raise InputError('iters, rounds, batch size and calibration '
                             'images must be >= 1, warmup >= 0')
        if self.streams is not None and self.streams < 0:
            raise InputError(f'--streams must be >= 0, got {self.streams}')
        cuda = check_device(self.device)
        if cuda and self.threads:
            raise InputError('--threads sets CPU threads: it applies to '
                             '--device cpu only')
        if self.tf32 and not cuda:
            raise InputError('--tf32 applies to --device cuda only (CPU '
                             'fp32 has no TF32)')
        images = _as_tuple(self.images) if self.images else None
        return replace(
            self, shape=checked_shape(self.shape, (713, 713)),
            threads=(None if cuda else
                     self.threads or len(os.sched_getaffinity(0))),
            images=image_files(images) if images else None, **lists)


def check_device(device: str) -> bool:
    """Whether ``device`` (``cpu``, ``cuda``, ``cuda:N``) is a CUDA one;
    :class:`InputError` for another name, :class:`UnavailableError` for a
    CUDA device that is not here."""
    kind, sep, index = str(device).partition(':')
    if kind not in ('cpu', 'cuda') or (sep and not (kind == 'cuda'
                                                    and index.isdigit())):
        raise InputError(f'unknown device {device!r}; valid: cpu, cuda, '
                         'cuda:N')
    if kind == 'cpu':
        return False
    if not torch.cuda.is_available():
        raise UnavailableError(f'--device {device}: no CUDA device is '
                               'available')
    if index and int(index) >= torch.cuda.device_count():
        raise UnavailableError(
            f'--device {device}: there are {torch.cuda.device_count()} '
            f'CUDA devices (valid: cuda:0 to '
            f'cuda:{torch.cuda.device_count() - 1})')
    return True


@dataclass
class Row:
    """One benchmarked variant."""
    config: str
    fused: bool
    model: nn.Module                    # fp32 torch LogitsModule (reference)
    engine: str = 'torch'
    precision: str = 'fp32'
    layout: str = 'nchw'
    run: Callable[[torch.Tensor], torch.Tensor] = None
    gmacs: float = 0.0
    params: int = 0
    latencies: List[float] = field(default_factory=list)
    peak_mem_mb: float = 0.0
    peak_mem_delta_mb: float = 0.0
    agreement: Optional[dict] = None
    info: dict = field(default_factory=dict)  # the engine's (INT8 convs)
    ir: Optional[str] = None  # an IR file timed as it is
    images: Optional[ImageWindows] = None  # the agreement images

    @property
    def name(self) -> str:
        return os.path.splitext(os.path.basename(self.config))[0]

    @property
    def label(self) -> str:
        return (f'{self.name}{"[fused]" if self.fused else ""}'
                f'{"[ir]" if self.ir else ""}'
                f'[{self.engine}/{self.precision}/{self.layout}]')

    @property
    def is_reference(self) -> bool:
        """fp32 eager torch: the rows are checked against this."""
        return (self.engine == 'torch' and self.precision == 'fp32'
                and self.layout == 'nchw')


def build_models(configs: Sequence[str], fuse: str = 'both',
                 checkpoints: Optional[Sequence[Optional[str]]] = None,
                 cfg_options: Optional[dict] = None) -> list:
    """``[(config, fused, fp32 LogitsModule)]`` for every (config, fused)
    variant."""
    if fuse not in FUSE_CHOICES:
        raise InputError(f'fuse must be yes, no or both, got {fuse!r}')
    checkpoints = list(checkpoints or [None] * len(configs))
    if len(checkpoints) != len(configs):
        raise InputError(f'{len(checkpoints)} checkpoints for '
                         f'{len(configs)} configs; give one per config')
    models = []
    for config, ckpt in zip(configs, checkpoints):
        model = load_model(config, ckpt, cfg_options=cfg_options)
        for fused in {'no': [False], 'yes': [True],
                      'both': [False, True]}[fuse]:
            m = deploy_copy(model) if fused else model
            models.append((config, fused, LogitsModule(m).eval()))
        print_log(f'built {config}' + (f' with {ckpt}' if ckpt else
                                       ' (random weights)'),
                  logger='current')
    return models


def _combinations(options: BenchmarkOptions):
    """The (engine, precision, layout) combinations that can run, and a
    note for each one skipped."""
    combos, notes = [], []
    for engine in options.engines:
        for precision in options.precisions:
            for layout in options.layouts:
                why = ENGINES[engine].unsupported(precision, layout,
                                                  options.device,
                                                  options.compile)
                if why:
                    notes.append(f'skipped {engine}/{precision}/{layout}: '
                                 f'{why}')
                else:
                    combos.append((engine, precision, layout))
    if not combos:
        raise UnavailableError('; '.join(n.split(': ', 1)[1]
                                         for n in notes))
    return combos, notes


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
    combos, notes = _combinations(options)
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
            rows = _make_rows(configs, options, combos, checkpoints,
                              cfg_options, tmp, notes, irs)
            result = _measure(rows, options, notes)
            result['setup'].update(tf32=precision['tf32'],
                                   precision_settings=precision)
            return result
    finally:
        torch.set_num_threads(previous_threads)
        torch.backends.cudnn.benchmark = previous_cudnn


def _agreement_images(model: nn.Module, config: str, options,
                      cfg_options, count: Optional[int] = None
                      ) -> ImageWindows:
    """The images rows are checked (or INT8 rows calibrated) on: the
    first ``count`` of ``options.images`` through the config's test
    pipeline, or generated ones."""
    input_shape = tuple(options.shape)
    if options.images:
        images = options.images[:count] if count else options.images
        return ImageWindows.from_files(
            model, as_config(config, cfg_options), images, input_shape,
            options.batch_size)
    seeds = ([options.seed + 1000 + i for i in range(count)] if count
             else [options.seed])
    return ImageWindows.generated(model, seeds, input_shape,
                                  options.batch_size)


def _run_options(options: BenchmarkOptions, precision: str, layout: str,
                 calibration=None) -> RunOptions:
    return RunOptions(precision=precision, layout=layout,
                      device=options.device, threads=options.threads,
                      compile=options.compile, streams=options.streams,
                      calibration=calibration)


def _log_int8(row: 'Row') -> None:
    if 'int8_convs' in row.info:
        print_log(f'{row.label}: {row.info["int8_convs"]}/'
                  f'{row.info["convs"]} convs run in INT8 '
                  f'({row.info["conv_kernels"]})', logger='current',
                  level=30 if row.info['int8_convs'] < row.info['convs']
                  else 20)


def _ir_row(config: str, model: nn.Module, ir: str,
            options: BenchmarkOptions) -> 'Row':
    """A row that times the OpenVINO IR ``ir`` as it is (e.g. the one
    ``tools/quantize.py`` wrote and tested), checked against ``model``."""
    from ..backends.openvino import (is_quantized, openvino_compile,
                                     openvino_conv_precisions)
    precision = 'int8' if is_quantized(ir) else 'fp32'
    row = Row(config=config, fused=True, model=model, engine='openvino',
              precision=precision, ir=ir)
    row.run = ENGINES['openvino'].file_runner(
        ir, _run_options(options, precision, 'nchw'))
    expected = list(row.run.input_shape[2:])
    if expected != list(options.shape):
        raise InputError(f'{ir} takes {expected[0]}x{expected[1]} inputs: '
                         f'benchmark it with --shape {expected[0]} '
                         f'{expected[1]}')
    x = torch.zeros((1, 3) + tuple(options.shape))
    convs = openvino_conv_precisions(
        openvino_compile(ir, 'int8', options.threads, profile=True), x)
    row.info = dict(ir=ir, convs=convs['convs'],
                    int8_convs=convs['int8_convs'],
                    conv_kernels=convs['kernels'])
    return row


def _make_rows(configs, options, combos, checkpoints, cfg_options,
               folder, notes: List[str], irs=None) -> List[Row]:
    input_shape = (options.batch_size, 3) + tuple(options.shape)
    rows = []
    irs = list(irs or [])
    for config, fused, model in build_models(configs, options.fuse,
                                             checkpoints, cfg_options):
        cx = model_complexity(model, options.shape, batch_size=1)
        # LogitsModule.to moves the data preprocessor's device too: the
        # agreement images are made on the device
        model.to(options.device)
        images = _agreement_images(model.model, config, options, cfg_options)
        for engine, precision, layout in combos:
            row = Row(config=config, fused=fused, model=model,
                      engine=engine, precision=precision, layout=layout,
                      gmacs=cx['flops'] / 1e9, params=cx['params'],
                      images=images)
            scratch = os.path.join(folder, str(len(rows)))
            os.makedirs(scratch)
            calibration = None
            if precision in INT8_PRECISIONS:
                calibration = _agreement_images(model.model, config, options,
                                                cfg_options,
                                                options.calib_images)
                print_log(f'{row.label}: quantizing (NNCF) on '
                          f'{len(calibration.items)} '
                          f'{calibration.description} images',
                          logger='current')
            row.run = ENGINES[engine].runner(
                model, input_shape,
                _run_options(options, precision, layout, calibration),
                scratch)
            row.info = dict(getattr(row.run, 'info', None) or {})
            _log_int8(row)
            _log_provider(row, options, notes)
            rows.append(row)
        index = configs.index(config)
        if index < len(irs) and irs[index] and (fused or options.fuse
                                                == 'no'):
            row = _ir_row(config, model, irs[index], options)
            row.gmacs, row.params, row.images = (cx['flops'] / 1e9,
                                                 cx['params'], images)
            _log_int8(row)
            rows.append(row)
    if any(r.precision in INT8_PRECISIONS and not r.ir for r in rows):
        notes.append(_int8_note(options))
    return rows


def _log_provider(row: 'Row', options: BenchmarkOptions,
                  notes: List[str]) -> None:
    """A note when an onnxruntime row on CUDA runs on another provider
    (onnxruntime falls back to its CPU provider when CUDA's fails to
    load)."""
    provider = row.info.get('provider')
    if (provider and options.device.startswith('cuda')
            and provider != 'CUDAExecutionProvider'):
        note = (f'{row.label} ran on onnxruntime\'s {provider}, not on '
                f'{options.device}: its CUDA provider did not load')
        print_log(note, logger='current', level=30)
        notes.append(note)


def _int8_note(options: BenchmarkOptions) -> str:
    if not options.images:
        return (f'INT8 rows were calibrated on {options.calib_images} '
                'generated images: their speed is real, their agreement '
                'says nothing about accuracy (calibrate on real images with '
                '--image, or use tools/quantize.py)')
    used = min(len(options.images), options.calib_images)
    return (f'INT8 rows were calibrated on the first {used} of the '
            f'--image images, which the agreement is measured on too (for '
            'a held-out measure use tools/quantize.py)')


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
    """Warm up every row, then time them round-robin; each row's peak
    memory is reset before its passes of a round (every row's model stays
    resident: its own is the increase over what was in use before)."""
    device = options.device
    x = _timing_input(options)
    meter = MemoryMeter(device)
    print_log(f'warm-up: {options.warmup} passes per row', logger='current')
    for row in rows:
        for _ in range(options.warmup):
            row.run(x)
        sync(device)
    for r in range(options.rounds):
        if machine_peak is not None:
            machine_peak.step()
        for row in rows:
            before = meter.start()
            for _ in range(options.iters):
                sync(device)
                start = time.perf_counter()
                row.run(x)
                sync(device)
                row.latencies.append(time.perf_counter() - start)
            peak = meter.peak()
            row.peak_mem_mb = max(row.peak_mem_mb, peak)
            row.peak_mem_delta_mb = max(row.peak_mem_delta_mb, peak - before)
        print_log(f'round {r + 1}/{options.rounds}: ' + ', '.join(
            f'{row.label} {statistics.median(row.latencies) * 1e3:.0f} ms'
            for row in rows), logger='current')


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
    return dict(setup=_setup(rows, options, notes),
                peak=measured and measured['peak'],
                reference_conv=measured and measured['reference_conv'],
                rows=results)


def _setup(rows: List[Row], options: BenchmarkOptions,
           notes: List[str]) -> dict:
    device = options.device
    cuda = device.startswith('cuda')
    precisions = sorted({r.precision for r in rows})
    return dict(
        timed=('forward pass in test mode (whole image) + bilinear resize '
               'of the logits to the input size; preprocessing excluded; '
               'generated inputs'),
        shape=list(options.shape), batch_size=options.batch_size,
        device=device, threads=None if cuda else options.threads,
        compile=options.compile,
        cudnn_benchmark=bool(torch.backends.cudnn.benchmark),
        engines=sorted({r.engine for r in rows}), precisions=precisions,
        layouts=sorted({r.layout for r in rows}),
        warmup=options.warmup, iters=options.iters, rounds=options.rounds,
        torch_version=str(torch.__version__),
        native_precision={p: reduced_precision_supported(p, device)
                          for p in precisions},
        date=time.strftime('%Y-%m-%d %H:%M:%S'),
        load_average=_load_average(), cpu=_cpu_name(),
        gpu=torch.cuda.get_device_name(torch.device(device)) if cuda
        else None,
        notes=notes,
        memory_note=(
            'peak_mem_mb: torch.cuda.max_memory_allocated on the device '
            'while the row ran (reset per row; all rows\' models resident); '
            'peak_mem_delta_mb: its increase over the memory allocated '
            'before the row' if cuda else
            'peak_mem_mb: process peak RSS while the row ran (all rows\' '
            'models resident); peak_mem_delta_mb: its increase over the RSS '
            'before the row'))


def _load_average():
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def _cpu_name() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return ''
