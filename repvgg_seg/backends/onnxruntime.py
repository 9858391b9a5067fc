"""onnxruntime as a backend: sessions on its CPU or CUDA provider, and the
runner of a session (inputs and outputs bound on the GPU for CUDA)."""
from typing import Optional, Sequence

import numpy as np
import torch

from ..errors import InputError
from . import require


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
