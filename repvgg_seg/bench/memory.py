"""Peak memory of a stretch of code: on CPU the process's peak RSS
(``VmHWM``, reset through ``/proc/self/clear_refs`` where the kernel allows
it), on CUDA the caching allocator's peak of the run's device (reset at
the start). Either way :meth:`MemoryMeter.start` returns what was in use
before, so a row's own peak is ``peak() - start()`` (every row's model
stays resident)."""
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


# the CUDA allocator's calls, one small function each (a test replaces
# them on a machine without CUDA)


def _cuda_start(device: torch.device) -> int:
    """Bytes allocated on ``device`` once its queued work is done, with
    its peak reset to them."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.memory_allocated(device)


def _cuda_peak(device: torch.device) -> int:
    """The most bytes allocated on ``device`` since :func:`_cuda_start`."""
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device)


class MemoryMeter:
    """Peak memory of a stretch of code (CPU: RSS; CUDA: allocator), in
    MB: ``before = meter.start()``, run, ``meter.peak()``."""

    def __init__(self, device: str):
        self.device = device
        self.cuda = str(device).startswith('cuda')
        self.can_reset = None

    def start(self) -> float:
        """Reset the peak; returns the memory in use now."""
        if self.cuda:
            return _cuda_start(torch.device(self.device)) / 2**20
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
        """The peak since :meth:`start`."""
        if self.cuda:
            return _cuda_peak(torch.device(self.device)) / 2**20
        hwm = _read_status_kb('VmHWM')
        if hwm is None:
            import resource
            hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return hwm / 1024
