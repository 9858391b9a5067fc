"""The project's error types, and how error messages list many things.

Every error that a user can cause (a bad config, a checkpoint that does not
fit, an input that is too small, a missing optional package ...) is a
:class:`RepVGGSegError`. The command-line tools print those as one
``error:`` line (:func:`repvgg_seg.cli.run_cli`); anything else is a bug and
shows its traceback.
"""
from typing import Iterable, Type


class RepVGGSegError(Exception):
    """Base class of the errors a user can cause and fix."""


class ConfigError(RepVGGSegError, ValueError):
    """A config file that is missing or cannot be used."""


class InputError(RepVGGSegError, ValueError):
    """A command-line or function argument out of its valid range."""


class CheckpointError(RepVGGSegError, RuntimeError):
    """A checkpoint file that cannot be read or does not fit the model."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint that needs classes outside the allow-list to load."""


class UnavailableError(RepVGGSegError, ValueError):
    """An engine, package or option that cannot run here (a missing
    package, no GPU, a PyTorch build without NNPACK ...)."""


class VerificationError(RepVGGSegError, ValueError):
    """A converted, exported or quantized model that does not match the
    original closely enough (nothing was written)."""


class ConversionError(VerificationError):
    """A deploy conversion whose result does not match the original
    model."""


class ExportError(VerificationError):
    """An ONNX/OpenVINO export whose result does not match torch."""


class QuantizationError(VerificationError):
    """An INT8 model that does not agree with fp32 torch closely enough
    (nothing was written)."""


class DatasetError(RepVGGSegError, ValueError):
    """A data set that is missing, incomplete or would load wrong."""


class NonFiniteLossError(RepVGGSegError, RuntimeError):
    """The training loss became NaN or infinite."""


def shorten_list(items: Iterable, limit: int = 5, sep: str = ', ') -> str:
    """``a, b, c, ... (12 in all)``: the first ``limit`` items and the
    count, for messages that name offending keys or files."""
    items = [str(item) for item in items]
    shown = sep.join(items[:limit])
    if len(items) > limit:
        shown += f'{sep}... ({len(items)} in all)'
    return shown


def check_choice(what: str, value, valid: Iterable,
                 error: Type[RepVGGSegError] = None, hint: str = '') -> None:
    """Raise ``error`` (:class:`InputError` by default) saying
    ``unknown <what> <value>; valid: a, b, c`` (and ``hint``, what else
    would do) unless ``value`` is one of ``valid``: the one wording of a
    wrong choice everywhere."""
    valid = list(valid)
    if value not in valid:
        raise (error or InputError)(
            f'unknown {what} {value!r}; valid: '
            + ', '.join(str(v) for v in valid) + (f'; {hint}' if hint else ''))
