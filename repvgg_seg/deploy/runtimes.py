"""The inference runtimes a deployed model runs on besides PyTorch:
onnxruntime and OpenVINO's CPU plugin. One session helper each, shared by
the export check (:mod:`.export`), quantization (:mod:`.quantize`) and the
engines (:mod:`repvgg_seg.engines`); both are optional packages (the
``deploy`` extra)."""
import os.path as osp
from typing import Optional, Sequence, Tuple

import numpy as np
import torch

from ..errors import InputError, UnavailableError

#: OpenVINO's names of the inference precisions
OPENVINO_PRECISION_HINTS = {'fp32': 'f32', 'bf16': 'bf16', 'fp16': 'f16',
                            'int8': 'f32'}


def require(package: str, purpose: str) -> None:
    """Raise :class:`UnavailableError` naming the install command unless
    ``package`` (``onnxruntime``, ``openvino``, ``nncf``) can be imported."""
    try:
        __import__(package)
    except ImportError:
        raise UnavailableError(
            f'{purpose} needs {package}: {package} is not installed (pip '
            f"install -e '.[deploy]', or pip install {package})") from None


def onnxruntime_providers(device: str = 'cpu',
                          tf32: Optional[bool] = None) -> list:
    """onnxruntime's execution providers for a session on ``device``:
    ``['CPUExecutionProvider']`` on ``cpu``; on ``cuda:N`` CUDA's on
    device N (``cuda``: torch's current device, as torch reads it), as
    ``[('CUDAExecutionProvider', {'device_id': N, 'use_tf32': ...})]``.
    ``tf32``: whether its fp32 convs and matmuls may run in TF32 (its own
    default is yes); ``None`` follows torch's cuDNN setting
    (``torch.backends.cudnn.allow_tf32``), so an onnxruntime row is the
    same fp32 as the torch rows beside it."""
    kind, sep, index = str(device).partition(':')
    if kind == 'cpu' and not sep:
        return ['CPUExecutionProvider']
    if kind != 'cuda' or (sep and not index.isdigit()):
        raise InputError(f'onnxruntime runs on cpu or cuda, not '
                         f'{device!r}; valid: cpu, cuda, cuda:N')
    device_id = int(index) if sep else torch.cuda.current_device()
    if tf32 is None:
        tf32 = bool(torch.backends.cudnn.allow_tf32)
    return [('CUDAExecutionProvider', {'device_id': device_id,
                                       'use_tf32': int(tf32)})]


#: onnxruntime's element types as numpy's and torch's
ORT_TYPES = {'tensor(float)': (np.float32, torch.float32),
             'tensor(float16)': (np.float16, torch.float16),
             'tensor(double)': (np.float64, torch.float64)}


def _io_bound_run(session, device_id: int):
    """``run(x) -> logits`` on a CUDA session with its input and output
    bound to torch's device memory (no copies through the host): ``x`` is
    read where it lies (moved to the session's device first if it lies
    elsewhere), the logits are written into a tensor allocated on that
    device, or, for an output whose shape is dynamic, where onnxruntime
    puts it and then copied (its shape is known only after the run)."""
    inp, out = session.get_inputs()[0], session.get_outputs()[0]
    if inp.type not in ORT_TYPES or out.type not in ORT_TYPES:
        raise InputError(f'onnxruntime on CUDA binds float inputs and '
                         f'outputs; the model has {inp.type} -> {out.type} '
                         f'(valid: {", ".join(ORT_TYPES)})')
    in_np, in_torch = ORT_TYPES[inp.type]
    out_np, out_torch = ORT_TYPES[out.type]
    out_static = all(isinstance(d, int) for d in out.shape)
    device = torch.device('cuda', device_id)

    def run(x):
        x = x.detach().to(device, in_torch).contiguous()
        binding = session.io_binding()
        binding.bind_input(inp.name, 'cuda', device_id, in_np,
                           tuple(x.shape), x.data_ptr())
        if out_static:
            logits = torch.empty(tuple(out.shape), dtype=out_torch,
                                 device=device)
            binding.bind_output(out.name, 'cuda', device_id, out_np,
                                tuple(logits.shape), logits.data_ptr())
        else:
            binding.bind_output(out.name, 'cuda', device_id)
        # onnxruntime runs on a stream of its own: torch's queued work on
        # x (and the output's allocation) must be done before it reads x;
        # its run returns once its own stream is done
        torch.cuda.current_stream(device).synchronize()
        session.run_with_iobinding(binding)
        if out_static:
            return logits
        return torch.from_numpy(binding.copy_outputs_to_cpu()[0]).to(device)

    return run


def onnxruntime_infer(path: str, threads: Optional[int] = None,
                      device: str = 'cpu',
                      providers: Optional[Sequence] = None):
    """An onnxruntime session of the ONNX file (all graph optimizations)
    on ``device`` (providers from :func:`onnxruntime_providers`, or
    ``providers``); returns ``run(x: Tensor) -> Tensor``. On CUDA the
    inputs and outputs are bound on the device (:func:`_io_bound_run`) and
    the logits stay there; on CPU ``x`` is copied to numpy and the logits
    come back on ``x``'s device. ``run.provider``: the provider that runs
    the session (onnxruntime falls back to its CPU provider when CUDA's
    fails to load: this shows it)."""
    require('onnxruntime', 'the onnxruntime runtime')
    import onnxruntime as ort
    if providers is None:
        providers = onnxruntime_providers(device)
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.graph_optimization_level = \
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(path, options, providers=list(providers))
    provider = session.get_providers()[0]
    if provider == 'CUDAExecutionProvider':
        device_id = int(session.get_provider_options()[provider].get(
            'device_id', 0))
        run = _io_bound_run(session, device_id)
    else:
        name = session.get_inputs()[0].name

        def run(x):
            out = session.run(None, {name: x.detach().cpu().numpy()})[0]
            return torch.from_numpy(out).to(x.device)

    run.session = session
    run.provider = provider
    return run


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
