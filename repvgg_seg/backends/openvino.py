"""OpenVINO's CPU plugin as a backend: reading, compiling and profiling
models, IR files, and running a compiled model."""
import os.path as osp
from typing import Optional, Tuple

import numpy as np
import torch

from . import require

#: OpenVINO's names of the inference precisions
OPENVINO_PRECISION_HINTS = {'fp32': 'f32', 'bf16': 'bf16', 'fp16': 'f16',
                            'int8': 'f32'}


def openvino_paths(out: str) -> Tuple[str, str]:
    """``(x.xml, x.bin)``: the two files of an OpenVINO IR named ``out``."""
    stem = osp.splitext(out)[0]
    return stem + '.xml', stem + '.bin'


def openvino_compile(path_or_model, precision: str = 'fp32',
                     threads: Optional[int] = None,
                     profile: bool = False,
                     streams: Optional[int] = None):
    """Compile an ONNX file, an OpenVINO IR or an ``openvino.Model`` for
    OpenVINO's CPU plugin. The precision hint is always set: the plugin's
    default on CPUs with AVX512-BF16/AMX is bf16, not fp32 (an INT8 model
    keeps its quantized layers in INT8 whatever the hint; ``'int8'`` means
    such a model, with its other layers in fp32). ``profile``: per-node
    counters (see :func:`openvino_conv_precisions`). ``streams``: ``None``
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
    if profile:
        options['PERF_COUNT'] = True
    core = ov.Core()
    model = (core.read_model(path_or_model)
             if isinstance(path_or_model, str) else path_or_model)
    return core.compile_model(model, 'CPU', options)


def openvino_infer(path_or_model, precision: str = 'fp32',
                   threads: Optional[int] = None, compiled=None):
    """:func:`openvino_compile` (or ``compiled``, a model compiled
    already), as ``run(x: Tensor) -> Tensor``."""
    if compiled is None:
        compiled = openvino_compile(path_or_model, precision, threads)
    request = compiled.create_infer_request()

    def run(x):
        result = request.infer({0: x.detach().cpu().numpy()})
        # a copy: the request reuses its output buffer on the next call
        return torch.from_numpy(np.array(next(iter(result.values()))))

    return run


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


def openvino_conv_precisions(compiled, x: torch.Tensor) -> dict:
    """How many convolutions of a model compiled with ``profile=True`` run
    in INT8: one inference on ``x``, then the runtime graph's profile
    (a conv node whose kernel -- its ``exec_type``, e.g.
    ``brgconv_avx512_I8`` -- computes in INT8). Returns ``convs``,
    ``int8_convs``, per node type the kernels that ran, so a silent
    fp32 fallback (``brgconv_avx512_f32``) shows, and ``layers``: each conv
    node's kernel by node name (in execution order)."""
    request = compiled.create_infer_request()
    request.infer({0: x.detach().cpu().numpy()})
    kernels, layers = {}, {}
    convs = int8 = 0
    for node in request.get_profiling_info():
        if node.node_type not in CONV_NODE_TYPES:
            continue
        convs += 1
        layers[node.node_name] = node.exec_type
        int8 += 'i8' in node.exec_type.lower()
        per_type = kernels.setdefault(node.node_type, {})
        per_type[node.exec_type] = per_type.get(node.exec_type, 0) + 1
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


def write_openvino_ir(onnx_path: str, xml_path: str) -> None:
    """The ONNX file as an OpenVINO IR (``xml_path`` and the ``.bin`` beside
    it), weights kept in fp32. Read with the runtime's ONNX frontend rather
    than ``ov.convert_model``, and not ``compress_to_fp16`` (the default of
    ``ov.save_model``): fp16 weights move the logits by ~3e-4 relative."""
    require('openvino', 'the OpenVINO IR export')
    import openvino as ov
    ov.save_model(ov.Core().read_model(onnx_path), xml_path,
                  compress_to_fp16=False)
