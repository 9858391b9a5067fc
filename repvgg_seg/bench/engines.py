"""The engines a benchmark row runs on, behind one small interface.

An :class:`Engine` says which precisions, layouts and devices it runs
(:meth:`Engine.unsupported`), whether its package is here
(:meth:`Engine.require`), and makes a runner, ``run(x) -> logits``, for a
model (:meth:`Engine.runner`). Adding an engine (or a precision of one) is
one class here and one entry in :data:`ENGINES`.
"""
import contextlib
import copy
import os.path as osp
from typing import Callable, Dict, Sequence, Tuple

import torch
import torch.nn as nn

from ..deploy import runtimes
from ..deploy.export import export_onnx_file
from ..deploy.winograd import require_nnpack, winograd_runner
from ..errors import UnavailableError
from .ceiling import DTYPES

Runner = Callable[[torch.Tensor], torch.Tensor]


class Engine:
    """One way to run a model. Subclasses set what they support and
    implement :meth:`runner`."""

    name = ''
    precisions: Tuple[str, ...] = ('fp32', )
    layouts: Tuple[str, ...] = ('nchw', )
    devices: Tuple[str, ...] = ('cpu', )
    #: whether the row's torch.compile option applies
    compiles = False

    def unsupported(self, precision: str, layout: str, device: str,
                    compile: bool) -> str:
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

    def require(self) -> None:
        """Raise :class:`UnavailableError` when this engine cannot run here
        at all (a missing package or library)."""

    def runner(self, module: nn.Module, input_shape: Sequence[int],
               precision: str, layout: str, device: str, threads: int,
               compile: bool, folder: str) -> Runner:
        """``run(x)`` computing ``module``'s logits on this engine.
        ``folder`` is a scratch folder for exported files."""
        raise NotImplementedError


class TorchEngine(Engine):
    """PyTorch itself. Reduced precision converts a copy of the weights
    once (not per call) and runs under ``torch.autocast``."""

    name = 'torch'
    precisions = ('fp32', 'bf16', 'fp16')
    layouts = ('nchw', 'cl')
    devices = ('cpu', 'cuda')
    compiles = True

    def runner(self, module, input_shape, precision, layout, device,
               threads, compile, folder):
        dtype = DTYPES[precision]
        channels_last = layout == 'cl'
        if dtype != torch.float32 or channels_last:
            # a copy: the fp32 NCHW module is other rows' model and reference
            module = copy.deepcopy(module).to(dtype)
        memory_format = (torch.channels_last if channels_last
                         else torch.contiguous_format)
        if channels_last:
            module = module.to(memory_format=torch.channels_last)
        fn = torch.compile(module, dynamic=False) if compile else module
        device_type = 'cuda' if device.startswith('cuda') else 'cpu'

        def run(x):
            autocast = (torch.autocast(device_type, dtype=dtype)
                        if dtype != torch.float32
                        else contextlib.nullcontext())
            x = x.to(device=device, dtype=dtype, memory_format=memory_format)
            with torch.inference_mode(), autocast:
                return fn(x)

        return run


class WinogradEngine(Engine):
    """The fused model with its stride-1 3x3 convs on NNPACK
    (:mod:`repvgg_seg.deploy.winograd`)."""

    name = 'winograd'

    def require(self):
        require_nnpack()

    def runner(self, module, input_shape, precision, layout, device,
               threads, compile, folder):
        return winograd_runner(module, input_shape)


class ExportedEngine(Engine):
    """An engine that runs the model exported to ONNX."""

    package = ''

    def require(self):
        runtimes.require(self.package, f'the {self.name} engine')

    def onnx_file(self, module, input_shape, folder) -> str:
        path = osp.join(folder, 'model.onnx')
        export_onnx_file(module, path, input_shape)
        return path


class OnnxRuntimeEngine(ExportedEngine):
    name = package = 'onnxruntime'
    devices = ('cpu', 'cuda')

    def runner(self, module, input_shape, precision, layout, device,
               threads, compile, folder):
        import onnxruntime as ort
        providers = ['CPUExecutionProvider']
        if device.startswith('cuda'):
            if 'CUDAExecutionProvider' not in ort.get_available_providers():
                raise UnavailableError(
                    'this onnxruntime has no CUDA provider')
            providers = ['CUDAExecutionProvider']
        return runtimes.onnxruntime_infer(
            self.onnx_file(module, input_shape, folder), threads, providers)


class OpenVINOEngine(ExportedEngine):
    """OpenVINO's CPU plugin at an explicit inference precision."""

    name = package = 'openvino'
    precisions = ('fp32', 'bf16', 'fp16')

    def runner(self, module, input_shape, precision, layout, device,
               threads, compile, folder):
        return runtimes.openvino_infer(
            self.onnx_file(module, input_shape, folder), precision, threads)


#: the engines by name, in the order of ``--engine``'s choices
ENGINES: Dict[str, Engine] = {
    engine.name: engine
    for engine in (TorchEngine(), OnnxRuntimeEngine(), OpenVINOEngine(),
                   WinogradEngine())
}
