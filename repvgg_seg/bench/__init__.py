"""Measuring deployed models: the interleaved speed benchmark
(:mod:`.timing`, options in :class:`.timing.BenchmarkOptions`), its engines
(:mod:`.engines`), the conv ceiling (:mod:`.ceiling`), peak memory
(:mod:`.memory`), the report table (:mod:`.report`) and model complexity
(:mod:`.complexity`)."""
from .ceiling import measure_ceiling
from .complexity import complexity, format_complexity
from .engines import ENGINES, Engine
from .report import format_table
from .timing import BenchmarkOptions, benchmark

__all__ = [
    'measure_ceiling', 'complexity', 'format_complexity', 'ENGINES',
    'Engine', 'format_table', 'BenchmarkOptions', 'benchmark'
]
