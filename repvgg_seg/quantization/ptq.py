"""Post-training quantization of an exported model with NNCF on OpenVINO.

:func:`quantize_model` is ``nncf.quantize`` (or, with a metric and a
``max_drop``, ``nncf.quantize_with_accuracy_control``) of an
``openvino.Model``, layers named by the caller left in fp32 through NNCF's
ignored scope. :func:`quantize_module` is the one export -> quantize path
of the benchmark's INT8 rows and its measured INT8 peak.

The OpenVINO model is constant-folded before NNCF sees it: OpenVINO's ONNX
frontend leaves a grouped conv's weight as ``Constant -> Reshape``, for
which NNCF computes weight scales that OpenVINO's CPU plugin cannot run in
INT8, so grouped convs silently stayed fp32 (the investigation is in
docs/benchmarks.md). Which convs run in INT8 is read from the kernels
OpenVINO's CPU plugin chose
(:func:`repvgg_seg.backends.openvino.openvino_conv_precisions`).
"""
import contextlib
import os.path as osp
import sys
import tempfile
from typing import Iterable, Optional, Sequence

import torch

from ..backends.openvino import (constant_folded, openvino_infer,
                                 openvino_read)
from ..deploy.export import export_onnx_file
from ..errors import VerificationError
from ..evaluation.agreement import agreement

#: the fp32 export must match torch this closely before it is quantized
FP32_TOLERANCE = 1e-4
#: OpenVINO op types left in float: a PSP pooling bin whose cells do not
#: divide the feature map exports as one Slice + ReduceMean per cell (50
#: for the 1-2-3-6 pyramid), each of which NNCF would give a quantizer of
#: its own (and accuracy control one more compile to rank); they hold no
#: weights and cost next to nothing in float
FLOAT_OP_TYPES = ('ReduceMean', )


def _ignored_scope(nodes: Sequence[str]):
    import nncf

    # validate=False: a model may have no such op (plain pools)
    return nncf.IgnoredScope(names=list(nodes), types=list(FLOAT_OP_TYPES),
                             validate=False)


def quantize_model(ov_model, calibration: Iterable[torch.Tensor],
                   preset: str = 'performance',
                   keep_fp32: Sequence[str] = (),
                   metric=None, max_drop: Optional[float] = None,
                   max_fp32_layers: Optional[int] = None):
    """``nncf.quantize`` of an ``openvino.Model`` on the calibration inputs
    (an iterable of model inputs with ``len``, re-iterable), after the
    constant folding that lets NNCF quantize grouped convs (see the module
    docstring); the OpenVINO nodes ``keep_fp32`` stay in fp32 (NNCF's
    ignored scope, :meth:`.names.ConvNames.select`; so do the ops of
    :data:`FLOAT_OP_TYPES`). With ``max_drop``,
    ``nncf.quantize_with_accuracy_control`` instead: it keeps the layers
    that cost most of ``metric`` (:mod:`repvgg_seg.evaluation.metrics`, on
    its held-out items) in fp32 until the INT8 model's metric is within
    ``max_drop`` points of the fp32 model's, reverting ``max_fp32_layers``
    at most. NNCF's progress bars go to stderr (stdout is for the tools'
    results). ``ov_model`` is not changed."""
    import nncf
    dataset = nncf.Dataset(calibration, lambda x: x.numpy())
    preset = {'performance': nncf.QuantizationPreset.PERFORMANCE,
              'mixed': nncf.QuantizationPreset.MIXED}[preset]
    model = constant_folded(ov_model.clone())
    with contextlib.redirect_stdout(sys.stderr):
        if max_drop is None:
            return nncf.quantize(model, dataset, preset=preset,
                                 subset_size=len(calibration),
                                 ignored_scope=_ignored_scope(keep_fp32))

        def validate(compiled, items):
            return metric(openvino_infer(None, compiled=compiled),
                          list(items))

        return nncf.quantize_with_accuracy_control(
            model, dataset, nncf.Dataset(metric.items), validate,
            max_drop=max_drop, drop_type=nncf.DropType.ABSOLUTE,
            preset=preset, subset_size=len(calibration),
            ignored_scope=_ignored_scope(keep_fp32),
            advanced_accuracy_restorer_parameters=(
                nncf.AdvancedAccuracyRestorerParameters(
                    max_num_iterations=max_fp32_layers)
                if max_fp32_layers is not None else None))


def exported_openvino(module: torch.nn.Module, input_shape: Sequence[int],
                      check_input: Optional[torch.Tensor] = None) -> tuple:
    """``module`` (a fused :class:`~repvgg_seg.apis.build.LogitsModule`, or
    any exportable module) exported to ONNX at ``input_shape`` through the
    checked export and read by OpenVINO, constant-folded: ``(openvino.Model,
    fp32 error)``. With ``check_input`` it must match torch on it within
    :data:`FP32_TOLERANCE` (:class:`VerificationError`; the error is
    ``None`` without it)."""
    with tempfile.TemporaryDirectory(prefix='repvgg_int8_') as tmp:
        onnx_path = osp.join(tmp, 'model.onnx')
        export_onnx_file(module, onnx_path, tuple(input_shape))
        fp32_model = constant_folded(openvino_read(onnx_path))
    error = None
    if check_input is not None:
        with torch.no_grad():
            reference = module(check_input)
        error = agreement(reference, openvino_infer(fp32_model)(
            check_input))['max_rel_error']
        if error > FP32_TOLERANCE:
            raise VerificationError(
                f'the exported fp32 model differs from torch: max '
                f'relative logit error {error:.3g} > '
                f'{FP32_TOLERANCE:g}; nothing was written')
    return fp32_model, error


def quantize_module(module: torch.nn.Module, input_shape: Sequence[int],
                    calibration: Iterable[torch.Tensor],
                    preset: str = 'performance'):
    """The one export -> quantize path (:func:`exported_openvino`, then
    :func:`quantize_model`), for the benchmark's INT8 rows and engine:
    the quantized ``openvino.Model`` (the runner compiled from it says how
    many of its convs run in INT8)."""
    fp32_model, _ = exported_openvino(module, input_shape)
    return quantize_model(fp32_model, calibration, preset)
