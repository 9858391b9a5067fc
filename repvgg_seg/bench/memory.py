"""Peak memory of a stretch of code: on CPU the process's peak RSS
(``VmHWM``, reset through ``/proc/self/clear_refs`` where the kernel allows
it), on CUDA the allocator's peak."""
import ctypes
from typing import Optional

import torch


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
