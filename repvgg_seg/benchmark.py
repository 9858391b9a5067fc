"""Inference speed of segmentors (and classifiers), measured interleaved.

What is timed
-------------
One row is one (config, fused or not) variant. Each timed sample is one
forward pass of a batch in test mode: a segmentor's whole-image forward
(backbone, decode head; no auxiliary head, no sliding window) **plus** the
bilinear resize of the logits to the input size
(:class:`repvgg_seg.deploy.LogitsModule`); for the onnxruntime/OpenVINO
engines the same graph exported to ONNX. Preprocessing (decoding,
normalization) is **excluded**: the inputs are generated tensors, created
once. The paper's setting is the default: 713x713, batch 1.

All rows are measured in one process, **interleaved**: after a warm-up of
every row, each round runs ``iters`` timed passes of every row in turn
(round-robin), so a background load or a clock change affects all rows
alike. Each row reports the median and the inter-quartile range (and min /
max) of its ``rounds x iters`` latencies, images/s from the median, peak
memory, GMACs (:mod:`repvgg_seg.complexity`, multiply-adds of the model as
run), achieved GFLOP/s (2 FLOPs per MAC) and its speed ratio to the first
row. With ``ceiling=True`` the achieved GFLOP/s are also given as a
percentage of the machine's measured conv ceiling (a 512->512 3x3 conv on a
90x90 map, batch 1) for the same precision and memory layout; the ceiling
conv is timed once per round, interleaved with the rows, and its median
used.

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
includes them all); on CUDA ``torch.cuda.max_memory_allocated``.
"""
import contextlib
import copy
import ctypes
import os
import os.path as osp
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.utils import track_progress

from .deploy import LogitsModule, checked_shape, load_model
from .models.convert import deploy_copy

ENGINES = ('torch', 'onnxruntime', 'openvino', 'winograd')
PRECISIONS = ('fp32', 'bf16', 'fp16')
DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16,
          'fp16': torch.float16}


class EngineUnavailable(ValueError):
    """An engine or option that cannot run here (missing package, ...)."""


# --------------------------------------------------------------------------
# memory


def _read_status_kb(key: str) -> Optional[int]:
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(key + ':'):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _malloc_trim() -> None:
    try:
        ctypes.CDLL('libc.so.6').malloc_trim(0)
    except (OSError, AttributeError):
        pass


class MemoryMeter:
    """Peak memory of a stretch of code (CPU: RSS; CUDA: allocator)."""

    def __init__(self, device: str):
        self.device = device
        self.can_reset = None

    def start(self) -> float:
        if self.device.startswith('cuda'):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            return torch.cuda.memory_allocated() / 2**20
        _malloc_trim()
        if self.can_reset is not False:
            try:
                with open('/proc/self/clear_refs', 'w') as f:
                    f.write('5')  # reset the peak RSS (VmHWM) to the RSS
                self.can_reset = True
            except OSError:
                self.can_reset = False
        return (_read_status_kb('VmRSS') or 0) / 1024

    def peak(self) -> float:
        if self.device.startswith('cuda'):
            return torch.cuda.max_memory_allocated() / 2**20
        hwm = _read_status_kb('VmHWM')
        if hwm is None:
            import resource
            hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return hwm / 1024


# --------------------------------------------------------------------------
# inputs


def synthetic_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A uint8 HxWx3 image with smooth gradients, blobs and edges (more
    image-like than noise, so argmax agreement is meaningful)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.zeros((height, width, 3), np.float32)
    for c in range(3):
        fy, fx = rng.uniform(0.5, 4, size=2) * 2 * np.pi
        img[..., c] = 127 + 60 * np.sin(fy * yy / height + fx * xx / width
                                        + rng.uniform(0, 6.3))
    for _ in range(12):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        ry = rng.uniform(0.05, 0.3) * height
        rx = rng.uniform(0.05, 0.3) * width
        mask = ((yy - cy) / ry)**2 + ((xx - cx) / rx)**2 < 1
        img[mask] = rng.uniform(0, 255, size=3)
    img += rng.normal(0, 4, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff')


def image_files(paths: Sequence[str]) -> List[str]:
    """The image files named by ``paths``: files as given, folders searched
    recursively (sorted, so the set and order are reproducible)."""
    files = []
    for path in paths:
        if osp.isdir(path):
            found = sorted(
                osp.join(root, name)
                for root, _, names in os.walk(path) for name in names
                if name.lower().endswith(IMAGE_SUFFIXES))
            if not found:
                raise FileNotFoundError(
                    f'no images ({", ".join(IMAGE_SUFFIXES)}) under {path}')
            files += found
        elif osp.isfile(path):
            files.append(path)
        else:
            raise FileNotFoundError(f'image not found: {path}')
    return files


def load_image(path: str, height: int, width: int) -> np.ndarray:
    import mmcv
    if not osp.isfile(path):
        raise FileNotFoundError(f'image not found: {path}')
    img = mmcv.imread(path)  # BGR, as mmseg's LoadImageFromFile
    if img is None:
        raise ValueError(f'not a readable image: {path}')
    return mmcv.imresize(img, (width, height))


def preprocess(model: nn.Module, img: np.ndarray) -> torch.Tensor:
    """Normalize an HxWx3 uint8 image as the model's data preprocessor
    does (1x3xHxW float)."""
    tensor = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)
    pre = getattr(model, 'data_preprocessor', None)
    if pre is not None and hasattr(pre, 'mean'):
        out = pre({'inputs': [tensor]}, False)['inputs']
        if isinstance(out, (list, tuple)):
            out = torch.stack(list(out))
        return out.float().cpu()
    return (tensor.float()[None] - 127.5) / 64.0


def agreement(reference: torch.Tensor, candidate: torch.Tensor) -> dict:
    """Max relative logit error and argmax agreement (%)."""
    ref, cand = reference.float().cpu(), candidate.float().cpu()
    scale = ref.abs().max().item()
    err = (ref - cand).abs().max().item()
    agree = (ref.argmax(1) == cand.argmax(1)).float().mean().item() * 100
    return dict(max_rel_error=err / scale if scale > 0 else err,
                argmax_agreement_pct=agree)


def pooled_agreement(per_image: Sequence[dict]) -> dict:
    """Agreement over several same-size images: pixel agreement pooled
    (the mean, every image having as many pixels), the worst error."""
    return dict(
        max_rel_error=max(a['max_rel_error'] for a in per_image),
        argmax_agreement_pct=statistics.fmean(
            a['argmax_agreement_pct'] for a in per_image),
        min_image_agreement_pct=min(a['argmax_agreement_pct']
                                    for a in per_image),
        images=len(per_image))


# --------------------------------------------------------------------------
# engines


@dataclass
class Row:
    """One benchmarked variant."""
    config: str
    fused: bool
    model: nn.Module                    # fp32 torch LogitsModule (reference)
    run: Callable[[torch.Tensor], torch.Tensor] = None
    engine: str = 'torch'
    precision: str = 'fp32'
    layout: str = 'nchw'
    gmacs: float = 0.0
    params: int = 0
    latencies: List[float] = field(default_factory=list)
    peak_mem_mb: float = 0.0
    peak_mem_delta_mb: float = 0.0
    agreement: Optional[dict] = None
    cleanup: List[Callable] = field(default_factory=list)

    @property
    def name(self) -> str:
        return osp.splitext(osp.basename(self.config))[0]


def _sync(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def torch_runner(module: nn.Module, device: str, precision: str = 'fp32',
                 channels_last: bool = False, compile: bool = False):
    """A callable running ``module`` with the given options.

    Reduced precision converts a copy of the weights once (not per call) and
    runs under ``torch.autocast`` (which keeps the ops that need it in fp32).
    """
    dtype = DTYPES[precision]
    if dtype != torch.float32 or channels_last:
        # a copy: the fp32 NCHW module is other rows' model and reference
        module = copy.deepcopy(module).to(dtype)
    memory_format = torch.channels_last if channels_last \
        else torch.contiguous_format
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    fn = module
    if compile:
        fn = torch.compile(module, dynamic=False)
    device_type = 'cuda' if device.startswith('cuda') else 'cpu'
    autocast = (torch.autocast(device_type, dtype=dtype)
                if dtype != torch.float32 else contextlib.nullcontext())

    def run(x):
        x = x.to(device=device, dtype=dtype, memory_format=memory_format)
        with torch.inference_mode(), autocast:
            return fn(x)

    return run


def export_for_engine(module: nn.Module, shape, folder: str) -> str:
    from .export import export_onnx_file
    path = osp.join(folder, 'model.onnx')
    export_onnx_file(module, path, shape)
    return path


def onnxruntime_runner(module: nn.Module, shape, device: str, threads: int,
                       folder: str):
    try:
        import onnxruntime as ort
    except ImportError:
        raise EngineUnavailable('onnxruntime is not installed (pip install '
                                'onnxruntime)') from None
    from .export import onnxruntime_infer
    providers = ['CPUExecutionProvider']
    if device.startswith('cuda'):
        if 'CUDAExecutionProvider' not in ort.get_available_providers():
            raise EngineUnavailable('this onnxruntime has no CUDA provider')
        providers = ['CUDAExecutionProvider']
    return onnxruntime_infer(export_for_engine(module, shape, folder),
                             threads, providers)


def openvino_runner(module: nn.Module, shape, device: str, threads: int,
                    precision: str, folder: str):
    try:
        import openvino  # noqa: F401
    except ImportError:
        raise EngineUnavailable('openvino is not installed (pip install '
                                'openvino)') from None
    if device != 'cpu':
        raise EngineUnavailable('the openvino engine runs on --device cpu')
    from .export import openvino_infer
    return openvino_infer(export_for_engine(module, shape, folder),
                          precision, threads)


# --------------------------------------------------------------------------
# the conv ceiling


def reduced_precision_supported(precision: str, device: str = 'cpu') -> bool:
    """Whether ``precision`` has native kernels here (on CPU: oneDNN's
    check for AVX512-BF16/AMX or AVX512-FP16; without them bf16/fp16 convs
    are emulated and much slower than fp32)."""
    if precision == 'fp32':
        return True
    if device.startswith('cuda'):
        return precision == 'fp16' or torch.cuda.is_bf16_supported()
    try:
        if precision == 'bf16':
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    except (AttributeError, RuntimeError):
        return False


def ceiling_key(precision: str, channels_last: bool) -> str:
    return f'{precision}-{"cl" if channels_last else "nchw"}'


class ConvCeiling:
    """The machine's conv ceiling: GFLOP/s of one ``channels``->``channels``
    3x3 conv (pad 1) on a ``size`` x ``size`` map, batch 1, for each
    ``precision-layout`` key (``fp32-nchw``, ``bf16-cl`` ...; bf16/fp16:
    weights and input in that dtype). :meth:`step` times one pass of every
    key; the benchmark calls it in every round, interleaved with the rows,
    and reports the median."""

    def __init__(self, keys: Sequence[str], device: str = 'cpu',
                 channels: int = 512, size: int = 90):
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
            fmt = torch.channels_last if layout == 'cl' else \
                torch.contiguous_format
            dtype = DTYPES[precision]
            self.cases[key] = (
                x.to(device, dtype).contiguous(memory_format=fmt),
                weight.to(device, dtype).contiguous(memory_format=fmt),
                bias.to(device, dtype))
        self.times = {key: [] for key in keys}

    def step(self, record: bool = True) -> None:
        with torch.inference_mode():
            for key, (xi, wi, bi) in self.cases.items():
                _sync(self.device)
                start = time.perf_counter()
                F.conv2d(xi, wi, bi, padding=1)
                _sync(self.device)
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
                    channels: int = 512, size: int = 90) -> Dict[str, dict]:
    """The conv ceiling on its own (see :class:`ConvCeiling`): the keys
    measured interleaved, the median of ``iters`` passes each."""
    ceiling = ConvCeiling(keys, device, channels, size)
    for step in range(warmup + iters):
        ceiling.step(record=step >= warmup)
    result = ceiling.result()
    print_log('conv ceiling: ' + ', '.join(
        f'{k} {v["gflops_per_s"]:.0f} GFLOP/s' for k, v in result.items()),
        logger='current')
    return result


# --------------------------------------------------------------------------
# the benchmark


def _quantiles(samples: Sequence[float]):
    arr = np.asarray(samples, dtype=np.float64)
    q1, med, q3 = np.percentile(arr, [25, 50, 75])
    return float(q1), float(med), float(q3)


def build_models(configs: Sequence[str], fuse: str = 'both',
                 checkpoints: Optional[Sequence[Optional[str]]] = None,
                 cfg_options: Optional[dict] = None) -> list:
    """``[(config, fused, fp32 LogitsModule)]`` for every (config, fused)
    variant."""
    if fuse not in ('yes', 'no', 'both'):
        raise ValueError(f'fuse must be yes, no or both, got {fuse!r}')
    checkpoints = list(checkpoints or [None] * len(configs))
    if len(checkpoints) != len(configs):
        raise ValueError(f'{len(checkpoints)} checkpoints for '
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


def _as_list(value, valid, what) -> List[str]:
    values = [value] if isinstance(value, str) else list(value)
    for v in values:
        if v not in valid:
            raise ValueError(f'unknown {what} {v!r}; valid: '
                             f'{", ".join(valid)}')
    return values


def _unsupported(engine, precision, layout, device, compile) -> str:
    """Why a combination cannot run ('' when it can)."""
    if engine == 'onnxruntime' and precision != 'fp32':
        return 'the onnxruntime engine runs fp32 only'
    if engine == 'winograd' and (precision != 'fp32' or device != 'cpu'
                                 or layout != 'nchw'):
        return 'the winograd engine runs fp32 NCHW on the CPU (NNPACK)'
    if engine in ('onnxruntime', 'openvino') and layout != 'nchw':
        return f'the {engine} engine picks its own layout'
    if engine != 'torch' and compile:
        return '--compile applies to the torch engine only'
    return ''


def benchmark(configs: Sequence[str],
              fuse: str = 'both',
              shape: Sequence[int] = (713, 713),
              batch_size: int = 1,
              device: str = 'cpu',
              threads: Optional[int] = None,
              precision='fp32',
              channels_last: bool = False,
              compile: bool = False,
              engine='torch',
              warmup: int = 2,
              iters: int = 3,
              rounds: int = 3,
              checkpoints: Optional[Sequence[Optional[str]]] = None,
              ceiling: bool = False,
              image=None,
              cfg_options: Optional[dict] = None,
              layouts: Optional[Sequence[str]] = None,
              seed: int = 0) -> dict:
    """Measure every row interleaved; see the module docstring.

    One row per (config, fused, engine, precision, layout): ``engine`` and
    ``precision`` may be lists, ``layouts`` a list of ``'nchw'``/``'cl'``
    (default: ``['cl']`` with ``channels_last``, else ``['nchw']``).
    Combinations an engine cannot run are skipped with a note when several
    were asked for, refused otherwise. ``image``: an image file or folder,
    or a list of them, for the agreement checks (default: synthetic).
    Returns ``{'setup': ..., 'ceiling': ..., 'rows': [...]}``.
    """
    engines = _as_list(engine, ENGINES, 'engine')
    precisions = _as_list(precision, PRECISIONS, 'precision')
    layouts = _as_list(layouts or (['cl'] if channels_last else ['nchw']),
                       ('nchw', 'cl'), 'layout')
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise EngineUnavailable('--device cuda: no CUDA device is available')
    if warmup < 0 or iters < 1 or rounds < 1 or batch_size < 1:
        raise ValueError('iters, rounds and batch size must be >= 1, warmup '
                         '>= 0')
    if image:
        image = image_files([image] if isinstance(image, str) else image)
    combos, notes = [], []
    for eng in engines:
        for prec in precisions:
            for lay in layouts:
                why = _unsupported(eng, prec, lay, device, compile)
                if why:
                    notes.append(f'skipped {eng}/{prec}/{lay}: {why}')
                else:
                    combos.append((eng, prec, lay))
    if not combos:
        raise EngineUnavailable('; '.join(n.split(': ', 1)[1]
                                          for n in notes))
    for note in notes:
        print_log(note, logger='current', level=30)
    if 'openvino' in engines:
        try:
            import openvino  # noqa: F401
        except ImportError:
            raise EngineUnavailable('openvino is not installed (pip install '
                                    'openvino)') from None
    if 'winograd' in engines:
        from .winograd import nnpack_available
        if not nnpack_available():
            raise EngineUnavailable('the winograd engine needs NNPACK, which '
                                    'this PyTorch build lacks')
    for prec in precisions:
        if not reduced_precision_supported(prec, device):
            print_log(f'{prec} has no native kernels on this {device} '
                      '(oneDNN reports no AVX512-BF16/AMX/FP16 support): its '
                      'convs are emulated and far slower than fp32',
                      logger='current', level=30)
    threads = threads or len(os.sched_getaffinity(0))
    previous_threads = torch.get_num_threads()
    previous_cudnn = torch.backends.cudnn.benchmark
    torch.set_num_threads(threads)
    # fixed input shape: let cuDNN pick its fastest kernels during the
    # warm-up passes (the configs' env_cfg.cudnn_benchmark, as mmseg does)
    torch.backends.cudnn.benchmark = device.startswith('cuda')
    try:
        return _benchmark(configs, fuse, checked_shape(shape, (713, 713)),
                          batch_size, device, threads, combos, compile,
                          warmup, iters, rounds, checkpoints, ceiling, image,
                          cfg_options, seed, notes)
    finally:
        torch.set_num_threads(previous_threads)
        torch.backends.cudnn.benchmark = previous_cudnn


def _make_runner(row: Row, device, input_shape, threads, compile, folder):
    engine, precision = row.engine, row.precision
    channels_last = row.layout == 'cl'
    if engine == 'torch':
        return torch_runner(row.model, device, precision, channels_last,
                            compile)
    if engine == 'winograd':
        from .winograd import winograd_runner
        return winograd_runner(row.model, input_shape)
    os.makedirs(folder, exist_ok=True)
    if engine == 'onnxruntime':
        return onnxruntime_runner(row.model, input_shape, device, threads,
                                  folder)
    return openvino_runner(row.model, input_shape, device, threads,
                           precision, folder)


def _benchmark(configs, fuse, shape, batch_size, device, threads, combos,
               compile, warmup, iters, rounds, checkpoints, ceiling, image,
               cfg_options, seed, notes) -> dict:
    from .complexity import model_complexity
    input_shape = (batch_size, 3) + shape
    rows = []
    tmp = tempfile.TemporaryDirectory(prefix='repvgg_bench_')
    try:
        for config, fused, model in build_models(configs, fuse, checkpoints,
                                                 cfg_options):
            cx = model_complexity(model, shape, batch_size=1)
            model.to(device)
            for engine, precision, layout in combos:
                row = Row(config=config, fused=fused, model=model,
                          engine=engine, precision=precision, layout=layout,
                          gmacs=cx['flops'] / 1e9, params=cx['params'])
                row.run = _make_runner(row, device, input_shape, threads,
                                       compile, osp.join(tmp.name,
                                                         str(len(rows))))
                rows.append(row)
        return _measure(rows, shape, batch_size, device, threads, compile,
                        warmup, iters, rounds, ceiling, image, seed, notes)
    finally:
        tmp.cleanup()


def _label(row: Row) -> str:
    return (f'{row.name}{"[fused]" if row.fused else ""}'
            f'[{row.engine}/{row.precision}/{row.layout}]')


def _measure(rows, shape, batch_size, device, threads, compile, warmup,
             iters, rounds, ceiling, image, seed, notes) -> dict:
    # agreement with the fp32 torch model on the images
    checked = [row for row in rows
               if row.engine != 'torch' or row.precision != 'fp32' or compile]
    # decoded per row, not held: a val set at 713x713 is hundreds of MB
    sources = image or [None]
    for row in checked:

        def compare(path, row=row):
            img = (load_image(path, *shape) if path else
                   synthetic_image(*shape, seed=seed))
            x = preprocess(row.model.model, img).to(device)
            x = x.expand(batch_size, -1, -1, -1).contiguous()
            with torch.inference_mode():
                reference = row.model(x)
            return agreement(reference, row.run(x))

        per_image = (track_progress(compare, sources, file=sys.stderr)
                     if len(sources) > 1 else [compare(sources[0])])
        row.agreement = pooled_agreement(per_image)
        print_log(f'{_label(row)}: max rel logit error '
                  f'{row.agreement["max_rel_error"]:.3g}, argmax agreement '
                  f'{row.agreement["argmax_agreement_pct"]:.3f}% '
                  f'({len(sources)} image{"s" if len(sources) > 1 else ""}, '
                  'worst '
                  f'{row.agreement["min_image_agreement_pct"]:.3f}%)',
                  logger='current')

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, 3, *shape, generator=gen).to(device)
    meter = MemoryMeter(device)
    print_log(f'warm-up: {warmup} passes per row', logger='current')
    for row in rows:
        for _ in range(warmup):
            row.run(x)
        _sync(device)

    ceiling_result = None
    if not ceiling:
        ceiling = None
    else:
        needed = {ceiling_key(r.precision, r.layout == 'cl') for r in rows}
        keys = ['fp32-nchw', 'fp32-cl', 'bf16-cl']
        keys += sorted(needed - set(keys))
        # an emulated (no native kernels) bf16/fp16 conv of this size takes
        # minutes and is no ceiling of anything: skipped
        skipped = [k for k in keys
                   if not reduced_precision_supported(k.split('-')[0],
                                                      device)]
        keys = [k for k in keys if k not in skipped]
        if skipped:
            notes.append(f'no conv ceiling for {", ".join(skipped)}: no '
                         f'native kernels on this {device}')
        ceiling = ConvCeiling(keys, device)
        ceiling.step(record=False)  # warm-up

    for r in range(rounds):
        if ceiling is not None:
            ceiling.step()
        for row in rows:
            before = meter.start()
            for _ in range(iters):
                _sync(device)
                start = time.perf_counter()
                row.run(x)
                _sync(device)
                row.latencies.append(time.perf_counter() - start)
            peak = meter.peak()
            row.peak_mem_mb = max(row.peak_mem_mb, peak)
            row.peak_mem_delta_mb = max(row.peak_mem_delta_mb, peak - before)
        print_log(f'round {r + 1}/{rounds}: ' + ', '.join(
            f'{_label(row)} {statistics.median(row.latencies) * 1e3:.0f} ms'
            for row in rows), logger='current')

    if ceiling is not None:
        ceiling_result = ceiling.result()
        print_log('conv ceiling (median of the rounds): ' + ', '.join(
            f'{k} {v["gflops_per_s"]:.0f} GFLOP/s'
            for k, v in ceiling_result.items()), logger='current')
    results = []
    for row in rows:
        q1, med, q3 = _quantiles(row.latencies)
        ips = batch_size / med
        result = dict(
            config=row.config, name=row.name, fused=row.fused,
            engine=row.engine, precision=row.precision, device=device,
            layout=row.layout, channels_last=row.layout == 'cl',
            compile=compile, threads=threads, batch_size=batch_size,
            shape=list(shape), images_per_s=ips, latency_ms=med * 1e3,
            latency_ms_q1=q1 * 1e3, latency_ms_q3=q3 * 1e3,
            latency_ms_iqr=(q3 - q1) * 1e3,
            latency_ms_min=min(row.latencies) * 1e3,
            latency_ms_max=max(row.latencies) * 1e3,
            samples=len(row.latencies),
            peak_mem_mb=row.peak_mem_mb,
            peak_mem_delta_mb=row.peak_mem_delta_mb,
            params=row.params, gmacs=row.gmacs,
            gflops_per_s=2 * row.gmacs * ips,
            agreement=row.agreement)
        key = ceiling_key(row.precision, row.layout == 'cl')
        if ceiling_result and key in ceiling_result:
            top = ceiling_result[key]['gflops_per_s']
            result['ceiling_key'] = key
            result['ceiling_gflops_per_s'] = top
            result['ceiling_pct'] = 100 * result['gflops_per_s'] / top
        results.append(result)
    for result in results:
        result['speed_ratio'] = (result['images_per_s']
                                 / results[0]['images_per_s'])
    precisions = sorted({r.precision for r in rows})
    setup = dict(
        timed=('forward pass in test mode (whole image) + bilinear resize '
               'of the logits to the input size; preprocessing excluded; '
               'generated inputs'),
        shape=list(shape), batch_size=batch_size, device=device,
        threads=threads, compile=compile,
        cudnn_benchmark=bool(torch.backends.cudnn.benchmark),
        engines=sorted({r.engine for r in rows}), precisions=precisions,
        layouts=sorted({r.layout for r in rows}),
        warmup=warmup, iters=iters, rounds=rounds,
        torch_version=str(torch.__version__),
        native_precision={p: reduced_precision_supported(p, device)
                          for p in precisions},
        date=time.strftime('%Y-%m-%d %H:%M:%S'),
        load_average=_load_average(),
        cpu=_cpu_name(), gpu=(torch.cuda.get_device_name()
                              if device.startswith('cuda') else None),
        notes=notes,
        memory_note=(
            'peak_mem_mb: process peak RSS while the row ran (all rows\' '
            'models resident); peak_mem_delta_mb: its increase over the RSS '
            'before the row' if device == 'cpu' else
            'torch.cuda.max_memory_allocated'))
    return dict(setup=setup, ceiling=ceiling_result, rows=results)


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


def format_table(result: dict) -> str:
    """The rows as a readable table, with what was timed."""
    setup = result['setup']
    load = setup.get('load_average')
    lines = [
        f'timed: {setup["timed"]}',
        f'input {setup["batch_size"]}x3x{setup["shape"][0]}x'
        f'{setup["shape"][1]}, device {setup["device"]}, '
        f'{setup["threads"]} threads'
        f'{", torch.compile" if setup["compile"] else ""}; '
        f'{setup["rounds"]} interleaved rounds x {setup["iters"]} passes '
        f'after {setup["warmup"]} warm-up passes; torch '
        f'{setup["torch_version"]}, {setup["date"]}'
        + (f', load average {load[0]:.1f}' if load else '')]
    if result.get('ceiling'):
        lines.append('conv ceiling (512->512 3x3, 90x90, batch 1): '
                     + ', '.join(f'{k} {v["gflops_per_s"]:.0f} GFLOP/s'
                                 for k, v in result['ceiling'].items()))
    header = ['config', 'fused', 'engine', 'prec', 'layout', 'ms (median)',
              'IQR ms', 'img/s', 'peak MB', '+MB', 'GMACs', 'GFLOP/s']
    rows = result['rows']
    has_ceiling = any('ceiling_pct' in r for r in rows)
    has_agree = any(r.get('agreement') for r in rows)
    if has_ceiling:
        header.append('% ceil')
    header.append('ratio')
    if has_agree:
        header += ['rel err', 'argmax %']
    table = [header]
    for r in rows:
        cells = [r['name'], 'yes' if r['fused'] else 'no', r['engine'],
                 r['precision'], r['layout'], f'{r["latency_ms"]:.1f}',
                 f'{r["latency_ms_q1"]:.0f}-{r["latency_ms_q3"]:.0f}',
                 f'{r["images_per_s"]:.3f}', f'{r["peak_mem_mb"]:.0f}',
                 f'{r["peak_mem_delta_mb"]:.0f}', f'{r["gmacs"]:.1f}',
                 f'{r["gflops_per_s"]:.1f}']
        if has_ceiling:
            cells.append(f'{r["ceiling_pct"]:.0f}%'
                         if 'ceiling_pct' in r else '-')
        cells.append(f'{r["speed_ratio"]:.2f}x')
        if has_agree:
            a = r.get('agreement')
            cells += ([f'{a["max_rel_error"]:.2g}',
                       f'{a["argmax_agreement_pct"]:.2f}'] if a else
                      ['-', '-'])
        table.append(cells)
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for i, row in enumerate(table):
        lines.append('  '.join(c.ljust(w) if j < 5 else c.rjust(w)
                               for j, (c, w) in enumerate(zip(row, widths))))
        if i == 0:
            lines.append('  '.join('-' * w for w in widths))
    for note in setup.get('notes') or []:
        lines.append(f'note: {note}')
    return '\n'.join(lines)
