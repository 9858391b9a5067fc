"""The engines a benchmark row runs on, behind one small interface.

An :class:`Engine` says which precisions, layouts and devices it runs
(:meth:`Engine.unsupported`), whether its package is here
(:meth:`Engine.require`, :meth:`Engine.require_precision`), and makes a
runner, ``run(x) -> logits``, for a model (:meth:`Engine.runner`). Adding an
engine (or a precision of one) is one class here and one entry in
:data:`ENGINES`. A runner may carry ``run.info``, a dict of facts for its
row (INT8: how many convs run in INT8).

INT8 is a precision of the OpenVINO engine: the exported model quantized by
NNCF (:func:`repvgg_seg.deploy.quantize.quantize_model`, with the constant
folding that puts grouped convs in INT8 too) on the calibration inputs the
benchmark passes (:class:`CalibrationInputs`).
"""
import contextlib
import copy
import os.path as osp
from typing import Callable, Dict, Iterator, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ..deploy import runtimes
from ..deploy.export import export_onnx_file
from ..deploy.verify import load_image, preprocess, synthetic_image
from ..deploy.winograd import require_nnpack, winograd_runner
from ..errors import UnavailableError
from .ceiling import DTYPES

Runner = Callable[[torch.Tensor], torch.Tensor]


class CalibrationInputs:
    """Model inputs to calibrate INT8 rows on: the benchmark's images
    (:func:`load_image` at the run's shape, then the model's data
    preprocessor) or, without images, generated ones
    (:func:`synthetic_image`; for speed only: the agreement of a model
    calibrated on them says nothing about real images). Lazy and
    re-iterable (NNCF makes several passes), batch-expanded."""

    def __init__(self, model: nn.Module, input_shape: Sequence[int],
                 images: Optional[Sequence[str]] = None, count: int = 10,
                 seed: int = 1000):
        self.model = model
        self.batch_size = input_shape[0]
        self.shape = tuple(input_shape[2:])
        self.generated = not images
        self.sources = (list(images)[:count] if images
                        else [seed + i for i in range(count)])

    def __len__(self) -> int:
        return len(self.sources)

    def __iter__(self) -> Iterator[torch.Tensor]:
        for source in self.sources:
            img = (synthetic_image(*self.shape, seed=source)
                   if self.generated else load_image(source, *self.shape))
            x = preprocess(self.model, img)
            yield x.expand(self.batch_size, -1, -1, -1).contiguous()


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

    def require_precision(self, precision: str) -> None:
        """Raise :class:`UnavailableError` when ``precision`` needs a
        package that is missing."""

    def runner(self, module: nn.Module, input_shape: Sequence[int],
               precision: str, layout: str, device: str, threads: int,
               compile: bool, folder: str,
               calibration: Optional[CalibrationInputs] = None) -> Runner:
        """``run(x)`` computing ``module``'s logits on this engine.
        ``folder`` is a scratch folder for exported files;
        ``calibration``: inputs for precisions that need them (INT8)."""
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
               threads, compile, folder, calibration=None):
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
               threads, compile, folder, calibration=None):
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
               threads, compile, folder, calibration=None):
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
    """OpenVINO's CPU plugin at an explicit inference precision, or the
    model quantized to INT8 by NNCF (``int8``; the layers NNCF leaves
    unquantized run in fp32)."""

    name = package = 'openvino'
    precisions = ('fp32', 'bf16', 'fp16', 'int8')

    def require_precision(self, precision):
        if precision == 'int8':
            runtimes.require('nncf', 'INT8 rows (--precision int8)')

    def runner(self, module, input_shape, precision, layout, device,
               threads, compile, folder, calibration=None):
        path = self.onnx_file(module, input_shape, folder)
        if precision != 'int8':
            return runtimes.openvino_infer(path, precision, threads)
        from ..deploy.quantize import quantize_model
        if calibration is None:
            raise ValueError('INT8 rows need calibration inputs')
        quantized = quantize_model(runtimes.openvino_read(path),
                                   calibration)
        # the profile from a separate compilation: the timed one runs
        # without the per-node counters, as the other rows do
        convs = runtimes.openvino_conv_precisions(
            runtimes.openvino_compile(quantized, 'int8', threads,
                                      profile=True),
            next(iter(calibration)))
        run = runtimes.openvino_infer(quantized, 'int8', threads)
        run.info = dict(convs=convs['convs'], int8_convs=convs['int8_convs'],
                        conv_kernels=convs['kernels'],
                        calibration_images=len(calibration),
                        calibration_generated=calibration.generated)
        return run


#: the engines by name, in the order of ``--engine``'s choices
ENGINES: Dict[str, Engine] = {
    engine.name: engine
    for engine in (TorchEngine(), OnnxRuntimeEngine(), OpenVINOEngine(),
                   WinogradEngine())
}
