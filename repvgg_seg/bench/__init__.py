"""Measuring deployed models: the interleaved speed benchmark
(:mod:`.timing`; its options in :mod:`.options`, its rows -- models,
runners on :mod:`repvgg_seg.engines`, INT8 calibration -- in :mod:`.rows`,
the setup record in :mod:`.host`), the measured peak per precision and the
reference conv (:mod:`.peak`), peak memory (:mod:`.memory`), fp32 on CUDA
with TF32 off or on (:mod:`.precision`), the report table (:mod:`.report`)
and model complexity (:mod:`.complexity`)."""
from .complexity import complexity, format_complexity
from .options import BENCH_ENGINES, PRECISIONS, BenchmarkOptions
from .peak import MeasuredPeak, measure_peak
from .precision import cuda_precision_settings
from .report import format_table
from .timing import benchmark

__all__ = [
    'MeasuredPeak', 'measure_peak', 'complexity', 'format_complexity',
    'BENCH_ENGINES', 'PRECISIONS', 'format_table', 'BenchmarkOptions',
    'benchmark', 'cuda_precision_settings'
]
