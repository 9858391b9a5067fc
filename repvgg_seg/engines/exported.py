"""The engines that run the model exported to ONNX: onnxruntime and
OpenVINO's CPU plugin (fp32, bf16, fp16, and INT8: an IR quantized by
``tools/quantize.py``, or the model quantized on the fly by NNCF for the
benchmark).

A model from a checkpoint is exported through the checked export
(:func:`repvgg_seg.deploy.export.export_onnx_file`) at the shape of its
first input; an ``.onnx``/``.xml`` file runs as it is.

OpenVINO compiled for throughput (``streams``) keeps one infer request per
stream: the windows of a batch run in parallel on them, and so do calls
from several threads (an inference job's workers), which is what its
THROUGHPUT hint is for. Compiled for latency, one request runs one window
at a time. Inputs are shared with the requests, not copied.

OpenVINO's runner hands the logits over channels-last: the model's output
is converted to NHWC inside the compiled graph (OpenVINO's
``PrePostProcessor``) and returned as an ``N x C x H x W`` tensor with
channels-last strides -- the same values, but mmseg's post-processing of
19-channel logits (the bilinear resize to the image size, the argmax over
the channels) runs on contiguous channels: measured on the demo IR
(256x512, one torch thread, EPYC Zen 3) argmax 44.5 -> 9.2 ms, resize
14.5 -> 2.4 ms, and the inference itself 31-32 -> 26-27 ms (the plugin's
own layout is closer to NHWC than NCHW).
"""
import collections
import os.path as osp
import queue
from typing import Optional

import numpy as np
import torch

from ..backends import onnxruntime as ort_backend
from ..backends import openvino as ov_backend
from ..backends import require
from ..deploy.export import export_onnx_file
from ..errors import InputError, UnavailableError
from .base import Engine, RunOptions

#: OpenVINO's inference precision for the layers an INT8 model leaves in
#: float: ``int8`` keeps them in f32 (the default on every CPU), and
#: ``int8-bf16`` runs them in bf16 (native on CPUs with AVX512-BF16/AMX)
INT8_PRECISIONS = {'int8': 'fp32', 'int8-bf16': 'bf16'}


def _shape_text(shape) -> str:
    return 'x'.join(str(d) if d >= 0 else '?' for d in shape)


class ExportedEngine(Engine):
    """An engine that runs the model exported to ONNX."""

    weight_kinds = ('checkpoint', 'onnx')
    batches = False

    def require(self):
        require(self.package, f'the {self.name} engine')

    def onnx_file(self, module, input_shape, folder) -> str:
        path = osp.join(folder, 'model.onnx')
        export_onnx_file(module, path, tuple(input_shape))
        return path

    def runner(self, module, input_shape, options, folder):
        return self.file_runner(self.onnx_file(module, input_shape, folder),
                                options)


class OnnxRuntimeEngine(ExportedEngine):
    """onnxruntime, on its CPU provider or, for ``--device cuda[:N]``, its
    CUDA provider on that device with inputs and outputs bound on it
    (:func:`repvgg_seg.backends.onnxruntime.onnxruntime_infer`). ``info``
    names the provider that runs the session (``provider``), so a fall-back
    to the CPU provider shows."""

    name = package = 'onnxruntime'
    devices = ('cpu', 'cuda')

    def default_device(self) -> str:
        """A visible GPU only where this onnxruntime has its CUDA provider
        (the ``onnxruntime`` package has none; ``onnxruntime-gpu`` has)."""
        if super().default_device() == 'cpu':
            return 'cpu'
        try:
            import onnxruntime as ort
        except ImportError:
            return 'cpu'
        return ('cuda' if 'CUDAExecutionProvider'
                in ort.get_available_providers() else 'cpu')

    def file_runner(self, path, options):
        self.require()
        import onnxruntime as ort
        if options.device.startswith('cuda') and \
                'CUDAExecutionProvider' not in ort.get_available_providers():
            raise UnavailableError(
                'this onnxruntime has no CUDA provider (available: '
                f'{", ".join(ort.get_available_providers())}); install '
                'onnxruntime-gpu, or use --device cpu')
        run = ort_backend.onnxruntime_infer(path, options.threads,
                                         options.device)

        def dims(port):
            return [d if isinstance(d, int) else -1 for d in port.shape]
        run.input_shape = dims(run.session.get_inputs()[0])
        run.output_shape = dims(run.session.get_outputs()[0])
        run.info = dict(provider=run.provider)
        return run


class OpenVINORunner:
    """A compiled OpenVINO model as ``run(x) -> logits`` for a batch of
    windows, safe to call from several threads at once: it holds the
    compiled model's optimal number of infer requests (one when compiled
    for latency, one per stream for throughput), a call takes free ones,
    and a batch's windows run on as many requests in flight as are free
    (see the module docstring). ``concurrency``: the number of requests;
    ``info``: the engine's facts; ``input_shape``: the model's static input
    shape (``-1`` where dynamic)."""

    def __init__(self, compiled, streams: Optional[int] = None,
                 info: Optional[dict] = None, channels_last: bool = False):
        self.compiled = compiled
        self.input_shape, self.output_shape = ov_backend.openvino_io_shapes(
            compiled)
        #: a second output, the labels (``OpenVINOEngine.labels_output``)
        self.has_labels = len(compiled.outputs) == 2
        #: the compiled model outputs NHWC (see the module docstring)
        self.channels_last = channels_last
        if channels_last:
            n, h, w, c = self.output_shape
            self.output_shape = [n, c, h, w]
        self.concurrency = 1
        if streams is not None and streams != 1:
            self.concurrency = max(1, int(compiled.get_property(
                'OPTIMAL_NUMBER_OF_INFER_REQUESTS')))
        # OpenVINO's AsyncInferQueue has one wait_all for all callers; a
        # pool of requests lets each call wait for its own windows only
        self.idle = queue.SimpleQueue()
        for _ in range(self.concurrency):
            self.idle.put(compiled.create_infer_request())
        self.info = dict(info or {})

    def _collect(self, request, output: int = 0) -> np.ndarray:
        try:
            request.wait()
            # a copy: the request reuses its output buffer
            return np.array(request.get_output_tensor(output).data)
        finally:
            self.idle.put(request)

    def _infer(self, x: np.ndarray, output: int = 0) -> np.ndarray:
        """``x``'s logits (or labels) on a free request (sync: the GIL is
        released)."""
        request = self.idle.get()
        try:
            request.infer({0: x}, share_inputs=True)
            return np.array(request.get_output_tensor(output).data)
        finally:
            self.idle.put(request)

    def labels(self, x: torch.Tensor) -> torch.Tensor:
        """The argmax over the classes of ``x``'s logits (``N x H x W``,
        int64 as mmseg's), computed in the compiled graph (compiled with
        ``labels``); the windows of a batch run as for the logits."""
        if not self.has_labels:
            raise InputError('this OpenVINO model was compiled without '
                             'its labels output (RunOptions(labels=True))')
        out = self._run(x, 1)
        return torch.from_numpy(out.reshape(out.shape[:3]).astype(np.int64))

    def _infer_each(self, arrays: np.ndarray,
                    output: int = 0) -> np.ndarray:
        """The windows of ``arrays`` one by one, as many in flight as
        requests are free; while none is, the oldest window of this call
        is waited for and its request reused (a call blocks on the pool
        only while it holds none: no deadlock between threads)."""
        outputs, pending = [], collections.deque()
        for i in range(arrays.shape[0]):
            request = None
            while request is None:
                try:
                    request = self.idle.get_nowait()
                except queue.Empty:
                    if not pending:
                        request = self.idle.get()
                    else:
                        outputs.append(self._collect(pending.popleft(),
                                                     output))
            pending.append(request)
            try:
                request.start_async({0: arrays[i:i + 1]}, share_inputs=True)
            except BaseException:
                for started in pending:  # give every request back
                    try:
                        started.wait()
                    except Exception:  # the error raised is the first one
                        pass
                    self.idle.put(started)
                raise
        outputs.extend(self._collect(r, output) for r in pending)
        return np.concatenate(outputs)

    def _logits(self, out: np.ndarray, device) -> torch.Tensor:
        logits = torch.from_numpy(out)
        if self.channels_last:
            logits = logits.permute(0, 3, 1, 2)  # NCHW, channels-last
        return logits.to(device)

    def _run(self, x: torch.Tensor, output: int = 0) -> np.ndarray:
        """Output ``output`` for the batch ``x``: in one request where the
        model takes the batch whole, else window by window."""
        arrays = x.detach().to('cpu', torch.float32).contiguous().numpy()
        batch = self.input_shape[0] if self.input_shape else 1
        if batch == arrays.shape[0] or (batch == -1 and
                                        self.concurrency == 1):
            return self._infer(arrays, output)
        if batch not in (1, -1):
            raise InputError(f'the model takes batches of {batch}, given '
                             f'{arrays.shape[0]}')
        return self._infer_each(arrays, output)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._logits(self._run(x), x.device)


class OpenVINOEngine(ExportedEngine):
    """OpenVINO's CPU plugin at an explicit inference precision, or an INT8
    model: an IR from ``tools/quantize.py``, or (from a checkpoint) the
    exported model quantized by NNCF on the calibration inputs of the run
    options (:func:`repvgg_seg.quantization.quantize.quantize_module`)."""

    name = package = 'openvino'
    precisions = ('fp32', 'bf16', 'fp16') + tuple(INT8_PRECISIONS)
    weight_kinds = ('checkpoint', 'onnx', 'ir')
    batches = True

    def weights_hint(self, kind):
        return ''

    def require_precision(self, precision):
        if precision in INT8_PRECISIONS:
            require('nncf', 'INT8 rows (--precision int8)')
        if 'bf16' in precision:
            require('openvino', 'the openvino engine')
            import openvino as ov
            caps = ov.Core().get_property('CPU', 'OPTIMIZATION_CAPABILITIES')
            if 'BF16' not in caps:
                raise UnavailableError(
                    f'--precision {precision} runs layers in bf16, which '
                    'this CPU has no native kernels for (OpenVINO: '
                    f'{", ".join(caps)}); use fp32 or int8')

    @staticmethod
    def hint(precision: str) -> str:
        """The compile precision of an ``int8``/``int8-bf16``/float run."""
        if precision in INT8_PRECISIONS:
            return 'int8' if INT8_PRECISIONS[precision] == 'fp32' \
                else 'bf16'
        return precision

    @staticmethod
    def nhwc_output(model):
        """``model`` (a path or an ``openvino.Model``) with its 4-D output
        converted to NHWC in the graph, and whether it was."""
        import openvino as ov
        if isinstance(model, str):
            model = ov_backend.openvino_read(model)
        else:
            model = model.clone()  # the caller's model keeps its output
        if len(model.outputs) != 1 or \
                model.output(0).get_partial_shape().rank.get_length() != 4:
            return model, False
        ppp = ov.preprocess.PrePostProcessor(model)
        ppp.output().model().set_layout(ov.Layout('NCHW'))
        ppp.output().tensor().set_layout(ov.Layout('NHWC'))
        return ppp.build(), True

    @staticmethod
    def labels_output(model):
        """``model`` (NHWC logits) given a second output: the argmax over
        the classes (TopK with k=1, int32 ``N x H x W x 1``)."""
        import openvino.opset13 as ops
        logits = model.get_results()[0].input_value(0)
        top = ops.topk(logits, ops.constant(np.int64(1)), axis=3,
                       mode='max', sort='none', index_element_type='i32')
        model.add_results([ops.result(top.output(1))])
        return model

    def compiled_runner(self, model, options: RunOptions,
                        info: Optional[dict] = None) -> OpenVINORunner:
        model, channels_last = self.nhwc_output(model)
        if options.labels and channels_last:
            model = self.labels_output(model)
        compiled = ov_backend.openvino_compile(
            model, self.hint(options.precision), options.threads,
            streams=options.streams)
        return OpenVINORunner(compiled, options.streams, info,
                              channels_last)

    def file_runner(self, path, options):
        if not osp.isfile(path):
            raise FileNotFoundError(f'model file not found: {path}')
        if path.endswith('.xml'):
            binary = ov_backend.openvino_paths(path)[1]
            if not osp.isfile(binary):
                raise FileNotFoundError(
                    f'the weights of the OpenVINO IR {path} are missing: '
                    f'{binary} not found')
        return self.compiled_runner(path, options, dict(weights=path))

    def runner(self, module, input_shape, options, folder):
        if options.precision not in INT8_PRECISIONS:
            return super().runner(module, input_shape, options, folder)
        from ..quantization.quantize import quantize_module
        calibration = options.calibration
        if calibration is None:
            raise InputError('INT8 from a checkpoint needs calibration '
                             'inputs (an INT8 IR from tools/quantize.py '
                             'needs none)')
        quantized, profile = quantize_module(module, input_shape,
                                             calibration,
                                             threads=options.threads)
        return self.compiled_runner(quantized, options, dict(
            convs=profile['convs'], int8_convs=profile['int8_convs'],
            conv_kernels=profile['kernels'],
            calibration_images=len(calibration.items),
            calibration_generated=calibration.is_generated))
