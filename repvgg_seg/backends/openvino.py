"""OpenVINO's CPU plugin as a backend: reading, compiling and inspecting
models, IR files, and running a compiled model (:class:`OpenVINORunner`).

Compiled for throughput (``streams``), the runner keeps one infer request
per stream: the windows of a batch run in parallel on them, and so do
calls from several threads (an inference job's workers), which is what
OpenVINO's THROUGHPUT hint is for. Compiled for latency, one request runs
one window at a time. Inputs are shared with the requests, not copied.

A runner made with ``channels_last`` hands over the logits of a model
whose output was converted to NHWC inside the compiled graph (OpenVINO's
``PrePostProcessor``, see :class:`repvgg_seg.engines.exported.OpenVINOEngine`)
as an ``N x C x H x W`` tensor with channels-last strides: the same values,
but mmseg's post-processing of 19-channel logits (the resize to the image
size, the argmax over the channels) then runs on contiguous channels,
several times faster, and the plugin's own layout is closer to NHWC than
NCHW (measured: docs/benchmarks.md, "Inference: the OpenVINO runner").
"""
import collections
import os.path as osp
import queue
from typing import List, Optional, Tuple

import numpy as np
import torch

from ..errors import InputError
from . import require
from .base import Runner

#: OpenVINO's names of the inference precisions
OPENVINO_PRECISION_HINTS = {'fp32': 'f32', 'bf16': 'bf16', 'fp16': 'f16',
                            'int8': 'f32'}


def openvino_paths(out: str) -> Tuple[str, str]:
    """``(x.xml, x.bin)``: the two files of an OpenVINO IR named ``out``."""
    stem = osp.splitext(out)[0]
    return stem + '.xml', stem + '.bin'


def openvino_compile(path_or_model, precision: str = 'fp32',
                     threads: Optional[int] = None,
                     streams: Optional[int] = None):
    """Compile an ONNX file, an OpenVINO IR or an ``openvino.Model`` for
    OpenVINO's CPU plugin. The precision hint is always set: the plugin's
    default on CPUs with AVX512-BF16/AMX is bf16, not fp32 (an INT8 model
    keeps its quantized layers in INT8 whatever the hint; ``'int8'`` means
    such a model, with its other layers in fp32). ``streams``: ``None``
    or 1 compiles for latency (one request at a time); more compiles for
    throughput with that many CPU streams, ``0`` lets the THROUGHPUT hint
    choose."""
    require('openvino', 'the OpenVINO runtime')
    import openvino as ov
    options = {'INFERENCE_PRECISION_HINT': OPENVINO_PRECISION_HINTS[precision],
               'PERFORMANCE_HINT': 'LATENCY'}
    if streams is not None and streams != 1:
        options['PERFORMANCE_HINT'] = 'THROUGHPUT'
        if streams > 1:
            options['NUM_STREAMS'] = streams
    if threads:
        options['INFERENCE_NUM_THREADS'] = threads
    core = ov.Core()
    model = (core.read_model(path_or_model)
             if isinstance(path_or_model, str) else path_or_model)
    return core.compile_model(model, 'CPU', options)


def openvino_read(path: str):
    """An ONNX file or an OpenVINO IR as an ``openvino.Model``."""
    require('openvino', 'the OpenVINO runtime')
    import openvino as ov
    return ov.Core().read_model(path)


def constant_folded(model):
    """``model`` (an ``openvino.Model``, changed in place and returned) with
    its constant subgraphs folded into constants (OpenVINO's
    ``ConstantFolding`` pass): the ONNX frontend leaves a grouped conv's
    weights as ``Constant -> Reshape``, which keeps NNCF from quantizing
    them (see :mod:`.quantize`). The function computed is unchanged."""
    from openvino import passes
    manager = passes.Manager()
    manager.register_pass(passes.ConstantFolding())
    manager.run_passes(model)
    return model


#: the CPU plugin's node types of convolutions in a runtime graph
CONV_NODE_TYPES = ('Convolution', 'GroupConvolution')


def openvino_kernels(compiled) -> List[Tuple[str, str, str]]:
    """``(node name, node type, kernel)`` of each node of a compiled model,
    in execution order: the kernels OpenVINO's CPU plugin chose when it
    compiled the model (its runtime model; e.g. ``brgconv_avx512_I8`` for a
    convolution computing in INT8), those a profile of an inference names,
    without running one."""
    nodes = []
    for node in compiled.get_runtime_model().get_ops():
        info = node.get_rt_info()
        node_type = info['layerType'].astype(str)
        # the runtime graph calls a grouped conv Convolution too; its
        # weight is 5-D (groups first), as the profile's GroupConvolution
        if node_type == 'Convolution' and node.get_input_size() > 1 and \
                node.input(1).get_partial_shape().rank.get_length() == 5:
            node_type = 'GroupConvolution'
        nodes.append((int(info['execOrder'].astype(str)),
                      node.get_friendly_name(), node_type,
                      info['primitiveType'].astype(str)))
    return [node[1:] for node in sorted(nodes)]


def openvino_conv_precisions(compiled) -> dict:
    """How many convolutions of a compiled model run in INT8 (a kernel of
    :func:`openvino_kernels` with ``I8`` in its name). Returns ``convs``,
    ``int8_convs``, per node type the kernels, so a silent fp32 fallback
    (``brgconv_avx512_f32``) shows, and ``layers``: each conv node's kernel
    by node name (in execution order)."""
    kernels, layers = {}, {}
    convs = int8 = 0
    for name, node_type, kernel in openvino_kernels(compiled):
        if node_type not in CONV_NODE_TYPES:
            continue
        convs += 1
        layers[name] = kernel
        int8 += 'i8' in kernel.lower()
        per_type = kernels.setdefault(node_type, {})
        per_type[kernel] = per_type.get(kernel, 0) + 1
    return dict(convs=convs, int8_convs=int8, kernels=kernels, layers=layers)


def is_quantized(path_or_model) -> bool:
    """Whether an OpenVINO model (or IR file) holds quantized layers
    (NNCF's ``FakeQuantize`` nodes)."""
    model = (openvino_read(path_or_model) if isinstance(path_or_model, str)
             else path_or_model)
    return any(op.get_type_name() == 'FakeQuantize'
               for op in model.get_ops())


def openvino_io_shapes(compiled) -> Tuple[list, list]:
    """The (static) shapes of a compiled model's first input and output;
    ``-1`` for a dynamic dimension."""
    def dims(port):
        return [d.get_length() if d.is_static else -1
                for d in port.get_partial_shape()]
    return dims(compiled.inputs[0]), dims(compiled.outputs[0])


class OpenVINORunner(Runner):
    """A compiled OpenVINO model as ``run(x) -> logits`` for a batch of
    windows, safe to call from several threads at once (see the module
    docstring): it holds the compiled model's optimal number of infer
    requests (one when compiled for latency, ``streams`` None or 1; one
    per stream for throughput), ``concurrency`` of them. ``channels_last``:
    the compiled model outputs NHWC (the logits are handed over as NCHW
    with channels-last strides); ``labels``: its second output is their
    argmax (:meth:`labels`). ``input_shape``/``output_shape``: the model's
    (NCHW) shapes, ``-1`` where dynamic."""

    def __init__(self, compiled, streams: Optional[int] = None,
                 info: Optional[dict] = None, channels_last: bool = False,
                 labels: bool = False):
        input_shape, output_shape = openvino_io_shapes(compiled)
        if channels_last:
            n, h, w, c = output_shape
            output_shape = [n, c, h, w]
        super().__init__(info, input_shape, output_shape)
        self.compiled = compiled
        self.channels_last = channels_last
        self.has_labels = labels
        if streams is not None and streams != 1:
            self.concurrency = max(1, int(compiled.get_property(
                'OPTIMAL_NUMBER_OF_INFER_REQUESTS')))
        # OpenVINO's AsyncInferQueue has one wait_all for all callers; a
        # pool of requests lets each call wait for its own windows only
        self.idle = queue.SimpleQueue()
        for _ in range(self.concurrency):
            self.idle.put(compiled.create_infer_request())

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.from_numpy(self._run(x))
        if self.channels_last:
            logits = logits.permute(0, 3, 1, 2)  # NCHW, channels-last
        return logits.to(x.device)

    def labels(self, x: torch.Tensor) -> torch.Tensor:
        """The argmax over the classes of ``x``'s logits (``N x H x W``,
        int64 as mmseg's), computed in the compiled graph (a runner made
        with ``labels``); the windows of a batch run as for the logits."""
        if not self.has_labels:
            raise InputError('this OpenVINO model was compiled without '
                             'its labels output (RunOptions(labels=True))')
        out = self._run(x, 1)
        return torch.from_numpy(out.reshape(out.shape[:3]).astype(np.int64))

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

    def _infer(self, x: np.ndarray, output: int = 0) -> np.ndarray:
        """``x``'s output on a free request (sync: the GIL is released)."""
        request = self.idle.get()
        try:
            request.infer({0: x}, share_inputs=True)
            # a copy: the request reuses its output buffer
            return np.array(request.get_output_tensor(output).data)
        finally:
            self.idle.put(request)

    def _collect(self, request, output: int = 0) -> np.ndarray:
        try:
            request.wait()
            return np.array(request.get_output_tensor(output).data)
        finally:
            self.idle.put(request)

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
                self._give_back(pending)
                raise
        outputs.extend(self._collect(r, output) for r in pending)
        return np.concatenate(outputs)

    def _give_back(self, started) -> None:
        """Every request of a failed call back to the pool, once idle."""
        for request in started:
            try:
                request.wait()
            except Exception:  # the error raised is the first one
                pass
            self.idle.put(request)


def openvino_infer(path_or_model, precision: str = 'fp32',
                   threads: Optional[int] = None,
                   compiled=None) -> OpenVINORunner:
    """:func:`openvino_compile` for latency (or ``compiled``, a model
    compiled already) as an :class:`OpenVINORunner`, ``run(x: Tensor) ->
    Tensor`` (its plain NCHW output)."""
    if compiled is None:
        compiled = openvino_compile(path_or_model, precision, threads)
    return OpenVINORunner(compiled)


def write_openvino_ir(onnx_path: str, xml_path: str) -> None:
    """The ONNX file as an OpenVINO IR (``xml_path`` and the ``.bin`` beside
    it), weights kept in fp32. Read with the runtime's ONNX frontend rather
    than ``ov.convert_model``, and not ``compress_to_fp16`` (the default of
    ``ov.save_model``): fp16 weights move the logits past the export's
    1e-4 check (docs/benchmarks.md)."""
    require('openvino', 'the OpenVINO IR export')
    import openvino as ov
    ov.save_model(ov.Core().read_model(onnx_path), xml_path,
                  compress_to_fp16=False)
