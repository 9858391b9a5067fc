"""onnxruntime as a backend: sessions on its CPU or CUDA provider, and the
runner of a session (inputs and outputs bound on the GPU for CUDA)."""
from typing import Optional, Sequence

import numpy as np
import torch

from ..errors import InputError
from . import require
from .base import Runner, parse_device


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
    kind, index = parse_device(device)
    if kind == 'cpu':
        return ['CPUExecutionProvider']
    device_id = torch.cuda.current_device() if index is None else index
    if tf32 is None:
        tf32 = bool(torch.backends.cudnn.allow_tf32)
    return [('CUDAExecutionProvider', {'device_id': device_id,
                                       'use_tf32': int(tf32)})]


#: onnxruntime's element types as numpy's and torch's
ORT_TYPES = {'tensor(float)': (np.float32, torch.float32),
             'tensor(float16)': (np.float16, torch.float16),
             'tensor(double)': (np.float64, torch.float64)}


def _dims(port) -> list:
    """A session input's or output's shape, ``-1`` where dynamic."""
    return [d if isinstance(d, int) else -1 for d in port.shape]


class OnnxRuntimeRunner(Runner):
    """An onnxruntime session as ``run(x) -> logits``. On the CPU provider
    ``x`` is copied to numpy and the logits come back on ``x``'s device; on
    CUDA's the input and output are bound to torch's device memory (no
    copies through the host, :meth:`_run_bound`) and the logits stay there.
    ``provider`` (also ``info['provider']``): the provider that runs the
    session (onnxruntime falls back to its CPU provider when CUDA's fails
    to load: this shows it)."""

    def __init__(self, session):
        self.session = session
        self.provider = session.get_providers()[0]
        self.port_in, self.port_out = (session.get_inputs()[0],
                                       session.get_outputs()[0])
        super().__init__(dict(provider=self.provider), _dims(self.port_in),
                         _dims(self.port_out))
        self.device_id = None
        if self.provider == 'CUDAExecutionProvider':
            self.device_id = int(session.get_provider_options()[
                self.provider].get('device_id', 0))
            self._check_bindable()

    def _check_bindable(self) -> None:
        types = (self.port_in.type, self.port_out.type)
        if any(t not in ORT_TYPES for t in types):
            raise InputError(f'onnxruntime on CUDA binds float inputs and '
                             f'outputs; the model has {types[0]} -> '
                             f'{types[1]} (valid: {", ".join(ORT_TYPES)})')

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.device_id is not None:
            return self._run_bound(x)
        out = self.session.run(None, {self.port_in.name:
                                      x.detach().cpu().numpy()})[0]
        return torch.from_numpy(out).to(x.device)

    def _run_bound(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` read where it lies (moved to the session's device first if
        it lies elsewhere); the logits written into a tensor allocated on
        that device, or, for an output whose shape is dynamic, where
        onnxruntime puts it and then copied (its shape is known only after
        the run)."""
        in_np, in_torch = ORT_TYPES[self.port_in.type]
        out_np, out_torch = ORT_TYPES[self.port_out.type]
        device = torch.device('cuda', self.device_id)
        x = x.detach().to(device, in_torch).contiguous()
        binding = self.session.io_binding()
        binding.bind_input(self.port_in.name, 'cuda', self.device_id, in_np,
                           tuple(x.shape), x.data_ptr())
        static = -1 not in self.output_shape
        if static:
            logits = torch.empty(tuple(self.output_shape), dtype=out_torch,
                                 device=device)
            binding.bind_output(self.port_out.name, 'cuda', self.device_id,
                                out_np, tuple(logits.shape),
                                logits.data_ptr())
        else:
            binding.bind_output(self.port_out.name, 'cuda', self.device_id)
        # onnxruntime runs on a stream of its own: torch's queued work on
        # x (and the output's allocation) must be done before it reads x;
        # its run returns once its own stream is done
        torch.cuda.current_stream(device).synchronize()
        self.session.run_with_iobinding(binding)
        if static:
            return logits
        return torch.from_numpy(binding.copy_outputs_to_cpu()[0]).to(device)


def onnxruntime_session(path: str, threads: Optional[int] = None,
                        device: str = 'cpu',
                        providers: Optional[Sequence] = None):
    """An onnxruntime session of the ONNX file (all graph optimizations)
    on ``device`` (providers from :func:`onnxruntime_providers`, or
    ``providers``)."""
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
    return ort.InferenceSession(path, options, providers=list(providers))


def onnxruntime_infer(path: str, threads: Optional[int] = None,
                      device: str = 'cpu',
                      providers: Optional[Sequence] = None
                      ) -> OnnxRuntimeRunner:
    """The ONNX file on onnxruntime (:func:`onnxruntime_session`) as an
    :class:`OnnxRuntimeRunner`, ``run(x: Tensor) -> Tensor``."""
    return OnnxRuntimeRunner(onnxruntime_session(path, threads, device,
                                                 providers))
