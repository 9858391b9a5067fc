"""The engines that run the PyTorch model itself: ``torch`` (the model as
loaded), ``fused`` (re-parameterized, conv+BN folded) and ``winograd`` (the
fused model with its stride-1 3x3 convs on NNPACK's Winograd kernels,
:mod:`repvgg_seg.engines.winograd`)."""
import copy

import torch

from ..models.convert import deploy_copy
from .base import DTYPES, Engine, TorchRunner
from .winograd import require_nnpack, winograd_runner


class TorchEngine(Engine):
    """PyTorch itself, the model as it is (unfused unless it is a deploy
    model). Reduced precision converts a copy of the weights once (not per
    call) and runs under ``torch.autocast``."""

    name = 'torch'
    precisions = ('fp32', 'bf16', 'fp16')
    layouts = ('nchw', 'cl')
    devices = ('cpu', 'cuda')
    compiles = True
    fuses = False

    def runner(self, module, input_shape, options, folder):
        dtype = DTYPES[options.precision]
        channels_last = options.layout == 'cl'
        if dtype != torch.float32 or channels_last:
            # a copy: the fp32 NCHW module is other rows' model and reference
            module = copy.deepcopy(module).to(dtype)
        memory_format = (torch.channels_last if channels_last
                         else torch.contiguous_format)
        if channels_last:
            module = module.to(memory_format=torch.channels_last)
        fn = torch.compile(module, dynamic=False) if options.compile \
            else module
        return TorchRunner(fn, options.device, dtype, memory_format)


class FusedTorchEngine(TorchEngine):
    """PyTorch on the fused model (:func:`repvgg_seg.fuse_for_deploy`)."""

    name = 'fused'
    fuses = True

    def runner(self, module, input_shape, options, folder):
        return super().runner(deploy_copy(module), input_shape, options,
                              folder)


class WinogradEngine(Engine):
    """The fused model with its stride-1 3x3 convs on NNPACK
    (:mod:`repvgg_seg.engines.winograd`; CPU, fp32, NCHW). The function is
    the same at every input size; its per-layer plan is tuned for the first
    input shape."""

    name = 'winograd'

    def require(self):
        require_nnpack()

    def runner(self, module, input_shape, options, folder):
        return winograd_runner(deploy_copy(module), input_shape,
                               tune=options.tune)
