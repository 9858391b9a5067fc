"""Measuring deployed models: the interleaved speed benchmark
(:mod:`.timing`, options in :class:`.timing.BenchmarkOptions`; its rows run
on :mod:`repvgg_seg.engines`), the measured peak per precision and the
reference conv (:mod:`.peak`), peak memory
(:mod:`.memory`), fp32 on CUDA with TF32 off or on (:mod:`.precision`), the
report table (:mod:`.report`) and model complexity (:mod:`.complexity`)."""
from .complexity import complexity, format_complexity
from .peak import MeasuredPeak, measure_peak
from .precision import cuda_precision_settings
from .report import format_table
from .timing import BENCH_ENGINES, BenchmarkOptions, benchmark

__all__ = [
    'MeasuredPeak', 'measure_peak', 'complexity', 'format_complexity',
    'BENCH_ENGINES', 'format_table', 'BenchmarkOptions', 'benchmark',
    'cuda_precision_settings'
]
