"""What a benchmark run measures and how (:class:`BenchmarkOptions`), and
the check of those options: engines, precisions, layouts, counts, the
device and its threads, the agreement images."""
import os
from dataclasses import dataclass, replace
from typing import Optional, Sequence, Tuple

import torch

from ..apis.build import checked_shape
from ..backends.base import parse_device
from ..engines import ENGINES
from ..engines.exported import INT8_PRECISIONS
from ..errors import InputError, UnavailableError, check_choice
from ..evaluation.images import image_files

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
        check_choice('fuse', self.fuse, FUSE_CHOICES)
        for what, values, valid in (('engine', lists['engines'],
                                     BENCH_ENGINES),
                                    ('precision', lists['precisions'],
                                     PRECISIONS),
                                    ('layout', lists['layouts'], LAYOUTS)):
            for value in values:
                check_choice(what, value, valid)
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
    kind, index = parse_device(device)
    if kind == 'cpu':
        return False
    if not torch.cuda.is_available():
        raise UnavailableError(f'--device {device}: no CUDA device is '
                               'available')
    if index is not None and index >= torch.cuda.device_count():
        raise UnavailableError(
            f'--device {device}: there are {torch.cuda.device_count()} '
            f'CUDA devices (valid: cuda:0 to '
            f'cuda:{torch.cuda.device_count() - 1})')
    return True
