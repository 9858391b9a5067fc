"""ONNX (and OpenVINO IR) export of fused segmentors.

The exported graph is :class:`repvgg_seg.apis.build.LogitsModule` of the
fused model (:func:`repvgg_seg.models.convert.fuse_for_deploy`): input a
normalized ``N x 3 x H x W`` float tensor, output the logits at the input
size (``N x classes x H x W``). It is checked with onnxruntime against torch
before it is renamed into place.

Adaptive average pooling with an output size above 1 (PSPNet's pyramid
pooling) has no ONNX operator; the legacy exporter maps it to ``AveragePool``
only for static input sizes that the bins divide. For export it is replaced
by :class:`.ops.ExportableAdaptiveAvgPool2d`, which computes the same bins
(PyTorch's ``floor(i*H/s)`` .. ``ceil((i+1)*H/s)``) with slices and means,
so the graph is exact for any size, including ``--dynamic`` H and W.
"""
import copy
import os
import os.path as osp
from dataclasses import dataclass, replace
from typing import Optional, Sequence

import torch
import torch.nn as nn
from mmengine.logging import print_log

from ..apis.build import (LogitsModule, checked_shape, default_input_shape,
                          load_model)
from ..backends import require
from ..backends.onnxruntime import onnxruntime_infer
from ..backends.openvino import (openvino_infer, openvino_paths,
                                 write_openvino_ir)
from ..errors import ExportError
from ..evaluation.agreement import (agreement, load_image, preprocess,
                                    synthetic_image)
from ..io.files import check_writable, staged_outputs, temp_path
from ..models.convert import fuse_for_deploy
from .ops import make_exportable

OPSET = 17


def export_onnx_file(module: nn.Module, path: str,
                     input_shape: Sequence[int], dynamic: bool = False,
                     opset: int = OPSET) -> None:
    """Write ``module`` (a :class:`LogitsModule` or any single-input module,
    fp32, CPU) to ``path`` as ONNX (TorchScript-based exporter)."""
    import warnings
    module = make_exportable(copy.deepcopy(module).cpu().eval())
    dummy = torch.randn(*input_shape)
    dynamic_axes = None
    if dynamic:
        dynamic_axes = {'input': {0: 'batch', 2: 'height', 3: 'width'},
                        'logits': {0: 'batch', 2: 'height', 3: 'width'}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter('ignore')  # tracer and deprecation warnings
        torch.onnx.export(module, (dummy, ), path, dynamo=False,
                          opset_version=opset, input_names=['input'],
                          output_names=['logits'], dynamic_axes=dynamic_axes,
                          do_constant_folding=True)


@dataclass
class ExportOptions:
    """How :func:`export_onnx` exports (``tools/export_onnx.py``'s options).

    ``shape``: the input size (default 713x713 for a segmentor, 224x224 for
    a classifier), with ``batch_size``; ``dynamic``: dynamic batch, height
    and width (checked at a second size too); ``openvino``: also an
    OpenVINO IR (``.xml``/``.bin`` next to the ONNX file, fp32 weights);
    ``opset``: the ONNX opset; ``tolerance``: the largest relative logit
    error accepted; ``image``: check on this image instead of a synthetic
    one; ``force``: overwrite existing outputs; ``cfg_options``: applied to
    the config.
    """
    shape: Optional[Sequence[int]] = None
    batch_size: int = 1
    dynamic: bool = False
    openvino: bool = False
    opset: int = OPSET
    tolerance: float = 1e-4
    image: Optional[str] = None
    force: bool = False
    cfg_options: Optional[dict] = None


def stage_openvino_ir(staged: dict, xml: str) -> str:
    """Add an OpenVINO IR ``xml`` (and its ``.bin``) to
    :func:`~repvgg_seg.io.files.staged_outputs`' ``staged``; returns the
    temporary ``.xml`` to write. OpenVINO writes and reads ``x.bin`` beside
    ``x.xml`` by its stem, so the pair is renamed together, the ``.bin``
    first."""
    binary = openvino_paths(xml)[1]
    tmp_xml = temp_path(xml)
    staged[binary] = osp.splitext(tmp_xml)[0] + '.bin'
    staged[xml] = tmp_xml
    return tmp_xml


def _fused_module(config, checkpoint: Optional[str],
                  options: ExportOptions) -> tuple:
    """The config's fused model and its :class:`LogitsModule`, and the
    checked input size."""
    model = load_model(config, checkpoint, cfg_options=options.cfg_options)
    fuse_for_deploy(model)
    shape = checked_shape(options.shape, default_input_shape(model))
    return model, LogitsModule(model).eval(), shape


def _check_runtimes(model, module: nn.Module, runtimes: dict,
                    check_shapes: Sequence[tuple],
                    options: ExportOptions) -> list:
    """Each runtime (``{name: run}``) against torch on a synthetic image
    (or ``options.image``) at each of ``check_shapes``; refuses
    (:class:`ExportError`) an error above ``options.tolerance``. Returns
    the checks (:func:`agreement`'s, with ``runtime`` and ``shape``)."""
    checks = []
    for i, (h, w) in enumerate(check_shapes):
        img = (load_image(options.image, h, w) if options.image else
               synthetic_image(h, w, seed=i))
        x = preprocess(model, img).expand(options.batch_size, -1, -1,
                                          -1).contiguous()
        with torch.no_grad():
            reference = module(x)
        for runtime, run in runtimes.items():
            result = dict(agreement(reference, run(x)), runtime=runtime,
                          shape=[h, w])
            checks.append(result)
            print_log(f'{runtime} vs torch at {h}x{w}: max relative '
                      f'logit error {result["max_rel_error"]:.3g}, argmax'
                      f' agreement {result["argmax_agreement_pct"]:.3f}%',
                      logger='current')
    worst = max(checks, key=lambda c: c['max_rel_error'])
    if worst['max_rel_error'] > options.tolerance:
        model_kind = ('ONNX model' if worst['runtime'] == 'onnxruntime'
                      else 'OpenVINO IR')
        raise ExportError(
            f'the {model_kind} differs from torch: max relative logit '
            f'error {worst["max_rel_error"]:.3g} > {options.tolerance:g} '
            f'({worst["runtime"]}); nothing was written')
    return checks


def export_onnx(config, checkpoint: Optional[str], out: str,
                options: Optional[ExportOptions] = None, **fields) -> dict:
    """Export a config's fused model to ONNX, check it, write it atomically.

    The check runs onnxruntime and torch on a synthetic image (or
    ``options.image``) at ``options.shape`` (and, with ``dynamic``, at a
    second size) and raises :class:`ExportError` -- writing nothing -- if
    the max relative logit error exceeds ``options.tolerance``. With
    ``openvino`` an OpenVINO IR (``.xml``/``.bin`` next to ``out``, fp32
    weights) is written too and checked the same way with OpenVINO's CPU
    plugin at fp32. ``options``: :class:`ExportOptions` (``fields``:
    keyword arguments of it, overriding).
    """
    options = replace(options or ExportOptions(), **fields)
    out = os.fspath(out)
    targets = [out] + (list(openvino_paths(out)) if options.openvino
                       else [])
    check_writable(targets, options.force)
    require('onnxruntime', 'the export check')
    if options.openvino:
        require('openvino', '--openvino')
    model, module, shape = _fused_module(config, checkpoint, options)
    input_shape = (options.batch_size, 3) + shape
    check_shapes = [shape]
    if options.dynamic:
        check_shapes.append((shape[0] + 32, max(32, shape[1] - 40)))
    with staged_outputs([out]) as staged:
        tmp = staged[out]
        print_log(f'exporting to ONNX (input {input_shape}, opset '
                  f'{options.opset}'
                  f'{", dynamic N/H/W" if options.dynamic else ""})',
                  logger='current')
        export_onnx_file(module, tmp, input_shape, options.dynamic,
                         options.opset)
        runtimes = {'onnxruntime': onnxruntime_infer(tmp)}
        if options.openvino:
            tmp_xml = stage_openvino_ir(staged, openvino_paths(out)[0])
            write_openvino_ir(tmp, tmp_xml)
            runtimes['openvino'] = openvino_infer(tmp_xml)  # the file as saved
        checks = _check_runtimes(model, module, runtimes, check_shapes,
                                 options)
    print_log(f'wrote {out}', logger='current')
    return dict(onnx=out, checks=checks, shape=list(shape),
                dynamic=options.dynamic, opset=options.opset,
                openvino=(list(openvino_paths(out)) if options.openvino
                          else None))
