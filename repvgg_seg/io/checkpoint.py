"""Safe checkpoint reading for every path of the project.

A ``.pth`` file is a pickle, and unpickling can run arbitrary code. Every
checkpoint the project reads (backbone ``init_cfg``, ``load_from``,
``--resume``, the tools) goes through :func:`load_checkpoint_file`, which uses
``torch.load(weights_only=True)`` with an allow-list of the few non-tensor
classes that mmengine's own checkpoints contain (message hub buffers, numpy
scalars and arrays). Anything else is refused with an explanation, unless the
user explicitly trusts the file: ``--trust-checkpoint`` or
``cfg.trust_checkpoint = True`` (the tools run with
:func:`trusted_checkpoints` for the duration of one command), or
``REPVGG_SEG_TRUST_CHECKPOINT=1`` in the environment.

``.safetensors`` files are read with the safetensors library (no pickle).

Importing :mod:`repvgg_seg` registers :func:`load_checkpoint_file` as
mmengine's loader for local paths, so mmengine's own ``load_checkpoint`` (used
by ``Runner.resume`` and ``load_from``) goes through it too.
"""
import contextlib
import contextvars
import os
import pickle
import zipfile
from typing import Iterator, Optional

import numpy as np
import torch
from mmengine.runner.checkpoint import CheckpointLoader

from ..errors import CheckpointError, UnsafeCheckpointError

TRUST_ENV = 'REPVGG_SEG_TRUST_CHECKPOINT'


def _numpy_multiarray():
    # numpy 2 moved the array internals to numpy._core (numpy.core is a
    # deprecated alias there); numpy 1 has numpy.core only
    try:
        from numpy._core import multiarray
    except ImportError:
        from numpy.core import multiarray
    return multiarray


def _numpy_globals():
    # numpy arrays and scalars pickle through _reconstruct/scalar; numpy 2
    # names them numpy._core, files written with numpy 1 name numpy.core, so
    # both names are allowed for the same functions.
    multiarray = _numpy_multiarray()
    entries = [np.ndarray, np.dtype]
    entries += [type(np.dtype(t)) for t in
                ('float16', 'float32', 'float64', 'int8', 'int16', 'int32',
                 'int64', 'uint8', 'uint16', 'uint32', 'uint64', 'bool')]
    for module_name in ('numpy._core.multiarray', 'numpy.core.multiarray'):
        entries += [(multiarray._reconstruct, f'{module_name}._reconstruct'),
                    (multiarray.scalar, f'{module_name}.scalar')]
    return entries


def _history_buffer_statistic(owner, name):
    """Stands in for ``getattr`` while unpickling, for one case only.

    mmengine's HistoryBuffer pickles its statistics methods as
    ``getattr(HistoryBuffer, 'mean')``; a general ``getattr`` would let a
    pickle reach anything (e.g. ``os.system``), so only those lookups pass.
    """
    from mmengine.logging.history_buffer import HistoryBuffer
    # the four built-ins are registered lazily, by the first instance
    allowed = {'min', 'max', 'current', 'mean'}
    allowed.update(HistoryBuffer._statistics_methods)
    if owner is HistoryBuffer and name in allowed:
        return getattr(owner, name)
    raise pickle.UnpicklingError(
        f'refused getattr({owner!r}, {name!r}) while unpickling: only '
        'HistoryBuffer statistics methods may be looked up')


def safe_globals() -> list:
    """The classes a weights-only load may construct, beyond torch's own.

    Exactly what mmengine 0.10's checkpoints (``meta.message_hub``,
    ``meta.dataset_meta``, scheduler states) need; nothing that runs code.
    """
    import collections

    from mmengine.config import ConfigDict
    from mmengine.logging.history_buffer import HistoryBuffer
    return [HistoryBuffer, ConfigDict, collections.Counter,
            (_history_buffer_statistic, 'builtins.getattr')
            ] + _numpy_globals()


# A context variable, not a module global: trust given for one command (or
# one config) must not outlive it and leak into later loads of the process.
_trust_override: contextvars.ContextVar = contextvars.ContextVar(
    'repvgg_seg_trust_checkpoints', default=None)


@contextlib.contextmanager
def trusted_checkpoints(trusted: bool = True) -> Iterator[None]:
    """Within the block, unpickle checkpoints fully when ``trusted``
    (dangerous; for files from a source you trust). ``False`` leaves the
    default (the environment variable) in force."""
    token = _trust_override.set(True) if trusted else None
    try:
        yield
    finally:
        if token is not None:
            _trust_override.reset(token)


def trust_checkpoints() -> bool:
    """Whether checkpoints are unpickled fully right now."""
    if _trust_override.get() is not None:
        return _trust_override.get()
    return os.environ.get(TRUST_ENV, '') == '1'


def load_checkpoint_file(filename: str, map_location='cpu',
                         trusted: Optional[bool] = None):
    """Read a checkpoint file safely (see the module docstring).

    Raises:
        FileNotFoundError: the file does not exist.
        UnsafeCheckpointError: the pickle needs a class outside the
            allow-list (the error names it).
        CheckpointError: the file is truncated or not a checkpoint.
    """
    filename = os.fspath(filename)
    if not os.path.isfile(filename):
        raise FileNotFoundError(f'checkpoint file not found: {filename}')
    if filename.endswith('.safetensors'):
        from safetensors.torch import load_file
        device = map_location if isinstance(map_location, str) else 'cpu'
        try:
            return load_file(filename, device=device)
        except Exception as exc:
            raise CheckpointError(
                f'{filename} is not a readable safetensors file: '
                f'{exc}') from None
    if trusted is None:
        trusted = trust_checkpoints()
    try:
        if trusted:
            return torch.load(filename, map_location=map_location,
                              weights_only=False)
        with torch.serialization.safe_globals(safe_globals()):
            return torch.load(filename, map_location=map_location,
                              weights_only=True)
    except pickle.UnpicklingError as exc:
        if 'Weights only load failed' in str(exc):
            raise UnsafeCheckpointError(
                _unsafe_message(filename, exc)) from None
        raise CheckpointError(
            f'{filename} is not a readable PyTorch checkpoint (truncated, '
            f'or not a checkpoint): {_first_line(exc)}') from None
    except (RuntimeError, EOFError, KeyError, ValueError, OSError,
            zipfile.BadZipFile, AttributeError, IndexError) as exc:
        raise CheckpointError(
            f'{filename} is not a readable PyTorch checkpoint (truncated, '
            f'or not a checkpoint): {type(exc).__name__}: '
            f'{_first_line(exc)}') from None


def _first_line(exc) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _unsafe_message(filename: str, exc: Exception) -> str:
    # torch's own explanation is the line after "WeightsUnpickler error:"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    # torch 2.6-2.14 put the "WeightsUnpickler error: " prefix on that line
    lines = [line.split('WeightsUnpickler error:', 1)[-1].strip()
             for line in lines]
    reason = next((line for line in lines if line.startswith(
        ('Unsupported global', 'Can only build', 'Trying to', 'refused'))),
        lines[-1] if lines else '')
    # torch's advice to allow-list the global follows on the same line
    reason = reason.split(' was not an allowed global')[0]
    return (f'refused to load {filename}: it needs objects outside the '
            f'allow-list of safe types ({reason}). Unpickling such a file '
            'can run arbitrary code. If you trust where the file comes from, '
            'pass --trust-checkpoint to the tool (or set trust_checkpoint = '
            f'True in the config, or {TRUST_ENV}=1); otherwise convert it to '
            'safetensors on a machine where it is safe to load.')


def _mmengine_local_loader(filename, map_location):
    return load_checkpoint_file(filename, map_location=map_location)


def register_safe_loader() -> None:
    """Make mmengine's ``load_checkpoint`` read local files through us."""
    CheckpointLoader.register_scheme(prefixes='', force=True)(
        _mmengine_local_loader)
