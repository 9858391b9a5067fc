"""What "fp32" means on a GPU: TF32 on or off, set and recorded.

On Ampere and later GPUs cuDNN runs fp32 convolutions in TF32 by default
(``torch.backends.cudnn.allow_tf32`` is True; 10 mantissa bits), so an
"fp32" row would silently be a TF32 row, not the paper's fp32.
:func:`cuda_precision_settings` turns TF32 off for the benchmark (or on,
when asked) and reports what it set, for the benchmark's ``setup``.
"""
import contextlib
from typing import Iterator

import torch


def tf32_flags() -> dict:
    """torch's TF32 switches as they are now (settable and readable on a
    machine without CUDA too)."""
    return dict(cudnn_allow_tf32=bool(torch.backends.cudnn.allow_tf32),
                cuda_matmul_allow_tf32=bool(
                    torch.backends.cuda.matmul.allow_tf32),
                float32_matmul_precision=torch.get_float32_matmul_precision())


def _set_tf32(cudnn: bool, matmul: bool, matmul_precision: str) -> None:
    torch.backends.cudnn.allow_tf32 = cudnn
    torch.backends.cuda.matmul.allow_tf32 = matmul
    torch.set_float32_matmul_precision(matmul_precision)


@contextlib.contextmanager
def cuda_precision_settings(device: str, tf32: bool = False
                            ) -> Iterator[dict]:
    """Within the block, fp32 on a CUDA ``device`` is true fp32 (TF32 off
    for cuDNN's convolutions and cuBLAS's matmuls, float32 matmul precision
    ``'highest'``), or TF32 with ``tf32``; the flags are restored after.
    Yields the report for the benchmark's setup: ``tf32`` (``None`` on
    CPU, where nothing is set: CPU fp32 never runs in TF32), the flags as
    set, and a note in words."""
    if not str(device).startswith('cuda'):
        yield dict(tf32=None, note='CPU: no TF32 (nothing set)')
        return
    saved = tf32_flags()
    _set_tf32(tf32, tf32, 'high' if tf32 else 'highest')
    try:
        yield dict(tf32=tf32, **tf32_flags(), note=(
            'fp32 convs and matmuls in TF32 (10-bit mantissa): --tf32'
            if tf32 else 'fp32 is IEEE fp32: TF32 off for cuDNN and cuBLAS'))
    finally:
        _set_tf32(saved['cudnn_allow_tf32'], saved['cuda_matmul_allow_tf32'],
                  saved['float32_matmul_precision'])
