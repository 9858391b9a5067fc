"""The engine interface: what an engine is, and the weights it takes.

An engine computes a segmentor's ``encode_decode`` -- the logits of a batch
of preprocessed windows (or whole images), resized to the windows' size --
on some runtime. Everything around it (pipeline, data preprocessor, slide
or whole inference, post-processing, metrics, visualisation) stays mmseg's
(:mod:`repvgg_seg.engines.segmentor`).

An :class:`Engine` says which precisions, layouts and devices it runs
(:meth:`Engine.unsupported`), whether its package is here
(:meth:`Engine.require`, :meth:`Engine.require_precision`), which weight
files it takes (:attr:`Engine.weight_kinds`, by file type, see
:func:`weights_kind`), and makes a :class:`~repvgg_seg.backends.base.Runner`,
``run(x) -> logits``: from a torch module (:meth:`Engine.runner`; the
benchmark's rows, and checkpoints) or from an exported file
(:meth:`Engine.file_runner`: ``.onnx``, ``.xml``). A runner carries
``info``, a dict of facts for reports (INT8: how many convs run in INT8),
``input_shape``/``output_shape`` (an exported file's static shapes, or
``None``), ``concurrency`` and, where its graph computes them, the labels
(``has_labels``, ``labels(x)``).
"""
import contextlib
import os.path as osp
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ..backends.base import Runner
from ..errors import InputError, check_choice

#: the torch dtypes of the precisions
DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16,
          'fp16': torch.float16}

#: weight files by suffix
WEIGHT_SUFFIXES = {
    '.pth': 'checkpoint', '.pt': 'checkpoint', '.safetensors': 'checkpoint',
    '.onnx': 'onnx', '.xml': 'ir'
}
KIND_NAMES = {'checkpoint': 'a PyTorch checkpoint (.pth, .safetensors)',
              'onnx': 'an ONNX file (.onnx)',
              'ir': 'an OpenVINO IR (.xml)'}


def weights_kind(path: Optional[str]) -> str:
    """``'checkpoint'``, ``'onnx'`` or ``'ir'`` from the file's suffix
    (``None``: a model with random weights, a ``'checkpoint'``)."""
    if path is None:
        return 'checkpoint'
    suffix = osp.splitext(str(path))[1].lower()
    check_choice(f'weights file type of {path}:', suffix or '(none)',
                 sorted(WEIGHT_SUFFIXES))
    return WEIGHT_SUFFIXES[suffix]


class TorchRunner(Runner):
    """A torch module as a runner: inputs moved to ``device`` in ``dtype``
    and ``memory_format``, the forward under ``inference_mode`` and, below
    fp32, ``torch.autocast``."""

    def __init__(self, module, device: str = 'cpu',
                 dtype: torch.dtype = torch.float32,
                 memory_format: torch.memory_format = torch.contiguous_format,
                 info: Optional[dict] = None):
        super().__init__(info)
        self.module = module
        self.device = device
        self.dtype = dtype
        self.memory_format = memory_format
        self.device_type = 'cuda' if device.startswith('cuda') else 'cpu'

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        autocast = (torch.autocast(self.device_type, dtype=self.dtype)
                    if self.dtype != torch.float32
                    else contextlib.nullcontext())
        x = x.to(device=self.device, dtype=self.dtype,
                 memory_format=self.memory_format)
        with torch.inference_mode(), autocast:
            return self.module(x)


@dataclass(frozen=True)
class RunOptions:
    """How an engine runs: precision (``fp32``, ``bf16``, ``fp16``,
    ``int8``), memory layout (``nchw``, ``cl``), device, CPU threads
    (``None``: the runtime's default), ``torch.compile``, OpenVINO's
    parallel infer requests (``streams``: ``None`` is one, ``0`` lets
    OpenVINO's throughput hint choose), whether the Winograd engine
    measures its per-layer plan (``tune``; ``False`` puts every eligible
    conv on NNPACK), whether the runner also gives the argmax labels
    computed in its graph (``labels``: OpenVINO; an inference job that
    needs no logits reads them, 19x less to copy and no argmax in torch)
    and, for INT8 made on the fly, the calibration inputs."""
    precision: str = 'fp32'
    layout: str = 'nchw'
    device: str = 'cpu'
    threads: Optional[int] = None
    compile: bool = False
    streams: Optional[int] = None
    tune: bool = True
    labels: bool = False
    calibration: Optional[object] = None


class Engine:
    """One way to run a model. Subclasses set what they support and
    implement :meth:`runner` (and :meth:`file_runner` for exported
    files)."""

    name = ''
    #: the Python package the engine needs ('' for none)
    package = ''
    precisions: Tuple[str, ...] = ('fp32', )
    layouts: Tuple[str, ...] = ('nchw', )
    devices: Tuple[str, ...] = ('cpu', )
    #: whether the row's torch.compile option applies
    compiles = False
    #: the weight files it takes (see :func:`weights_kind`)
    weight_kinds: Tuple[str, ...] = ('checkpoint', )
    #: whether a model from a checkpoint is fused before it runs
    fuses = True
    #: whether the runner takes a batch > 1 (else windows run one by one)
    batches = True

    def unsupported(self, precision: str = 'fp32', layout: str = 'nchw',
                    device: str = 'cpu', compile: bool = False) -> str:
        """Why this engine cannot run the combination ('' when it can)."""
        if precision not in self.precisions:
            return (f'the {self.name} engine runs '
                    f'{"/".join(self.precisions)} only')
        if layout not in self.layouts:
            return f'the {self.name} engine picks its own layout'
        if device.split(':')[0] not in self.devices:
            return f'the {self.name} engine runs on --device cpu'
        if compile and not self.compiles:
            return '--compile applies to the torch engine only'
        return ''

    def default_device(self) -> str:
        """Where this engine runs unless told: a GPU when one is visible
        and the engine runs there, else the CPU."""
        return ('cuda' if 'cuda' in self.devices and torch.cuda.is_available()
                else 'cpu')

    def device_for(self, device) -> str:
        """Where this engine runs a model that sits on ``device``: there,
        where the engine runs on that kind of device (``cuda:1`` stays
        ``cuda:1``), else on the CPU."""
        device = torch.device(device)
        return str(device) if device.type in self.devices else 'cpu'

    def check_weights(self, path: Optional[str]) -> str:
        """The kind of ``path`` (:func:`weights_kind`), refused with the
        reason when this engine does not take it."""
        kind = weights_kind(path)
        if kind not in self.weight_kinds:
            takes = ' or '.join(KIND_NAMES[k] for k in self.weight_kinds)
            raise InputError(
                f'the {self.name} engine takes {takes}; {path} is '
                f'{KIND_NAMES[kind]}' + self.weights_hint(kind))
        return kind

    def weights_hint(self, kind: str) -> str:
        """What to do with weights of ``kind`` instead (for the error)."""
        if kind == 'checkpoint':
            return ''
        return (': run it with --engine openvino' if kind == 'ir' else
                ': run it with --engine onnxruntime or openvino')

    def require(self) -> None:
        """Raise :class:`~repvgg_seg.errors.UnavailableError` when this
        engine cannot run here at all (a missing package or library)."""

    def require_precision(self, precision: str) -> None:
        """Raise :class:`~repvgg_seg.errors.UnavailableError` when
        ``precision`` needs a package that is missing."""

    def runner(self, module: nn.Module, input_shape: Sequence[int],
               options: RunOptions, folder: str) -> Runner:
        """``run(x)`` computing ``module``'s logits (``module``: a
        :class:`~repvgg_seg.apis.build.LogitsModule`) on this engine, for
        inputs of ``input_shape``. ``folder``: scratch space for exported
        files."""
        raise NotImplementedError

    def file_runner(self, path: str, options: RunOptions) -> Runner:
        """``run(x)`` computing the logits of an exported model file."""
        raise InputError(f'the {self.name} engine takes no {path}')
