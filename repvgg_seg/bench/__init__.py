"""Measuring deployed models: the interleaved speed benchmark
(:mod:`.timing`, options in :class:`.timing.BenchmarkOptions`; its rows run
on :mod:`repvgg_seg.engines`), the conv ceiling (:mod:`.ceiling`), peak memory
(:mod:`.memory`), the report table (:mod:`.report`) and model complexity
(:mod:`.complexity`)."""
from .ceiling import measure_ceiling
from .complexity import complexity, format_complexity
from .report import format_table
from .timing import BENCH_ENGINES, BenchmarkOptions, benchmark

__all__ = [
    'measure_ceiling', 'complexity', 'format_complexity', 'BENCH_ENGINES',
    'format_table', 'BenchmarkOptions', 'benchmark'
]
