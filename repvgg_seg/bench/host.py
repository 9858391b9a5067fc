"""What the machine and the run were: the setup record of a benchmark's
result (what was timed, the options, torch's version, the date, the load
average, the CPU or GPU, the memory note)."""
import os
import time
from typing import List

import torch

from .options import BenchmarkOptions
from .peak import reduced_precision_supported


def setup_record(rows: list, options: BenchmarkOptions,
                 notes: List[str]) -> dict:
    """The result's ``setup``: how ``rows`` (:class:`.rows.Row`) were
    measured, on what, with ``notes``."""
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
    return cpu_description().get('cpu', '')


#: the CPU flags that change which kernels run (the runtimes pick by them)
KERNEL_FLAGS = ('avx2', 'avx512f', 'avx512_vnni', 'avx_vnni', 'avx512_bf16',
                'amx_bf16', 'amx_int8')


def cpu_description() -> dict:
    """The CPU as /proc/cpuinfo names it (model name, family, model), its
    cores for this process and which of :data:`KERNEL_FLAGS` it has."""
    found = {}
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                key, _, value = (part.strip() for part in line.partition(':'))
                if key in ('model name', 'cpu family', 'model', 'flags') and \
                        key not in found:
                    found[key] = value
    except OSError:
        pass
    flags = set(found.get('flags', '').split())
    return dict(cpu=found.get('model name', ''),
                family=found.get('cpu family'), model=found.get('model'),
                cores=len(os.sched_getaffinity(0)),
                flags=[f for f in KERNEL_FLAGS if f in flags],
                date=time.strftime('%Y-%m-%d %H:%M:%S'),
                load_average=_load_average())
