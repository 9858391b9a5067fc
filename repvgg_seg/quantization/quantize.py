"""INT8 post-training quantization of fused segmentors (NNCF on OpenVINO).

:func:`quantize_segmentor` (``tools/quantize.py``) runs these stages, each a
function a user can call (options in :class:`.options.QuantizeOptions`,
what a stage hands the next in :class:`Quantization`):

1. :func:`prepare`: the outputs checked, the trained model loaded and fused
   (:func:`repvgg_seg.models.convert.fuse_for_deploy`), the calibration and
   held-out images (:mod:`.images`: the config's test pipeline, the model's
   windows; never a calibration image held out);
2. :func:`equalize_fused`: cross-layer equalization (:mod:`.equalize`, on
   by default), checked exact in fp32;
3. :func:`export_fp32`: the held-out metric of the fp32 torch model
   (:mod:`repvgg_seg.evaluation.metrics`: mmseg's mIoU, or pixel
   agreement) and its checked export to OpenVINO;
4. :func:`quantize_int8`: ``nncf.quantize``, or with ``max_drop``
   ``nncf.quantize_with_accuracy_control``, which keeps the layers that
   cost most of the metric in fp32 (:mod:`.ptq`); layers named by the
   user stay fp32 through NNCF's ignored scope (:mod:`.names` maps the
   model's names to OpenVINO's); optionally the per-layer table
   (:mod:`.sensitivity`);
5. :func:`evaluate`: fp32 and INT8 on the held-out images (agreement with
   fp32 torch, the metric) and which convs run in INT8 (OpenVINO's
   profile): the report;
6. :func:`gate`: nothing is written when the INT8 model does not agree
   with the fp32 torch model closely enough, or lost more of the metric
   than ``max_drop``;
7. :func:`write_ir`: the INT8 OpenVINO IR (and the report), together.
"""
import copy
import json
import os
import time
from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, NamedTuple, Optional

import torch.nn as nn
from mmengine.config import Config
from mmengine.logging import print_log

from ..apis.build import LogitsModule, checked_shape, load_model
from ..backends import require
from ..backends.openvino import (openvino_conv_precisions, openvino_infer,
                                 openvino_paths)
from ..config import as_config
from ..deploy.export import stage_openvino_ir
from ..errors import InputError, QuantizationError, VerificationError
from ..evaluation.metrics import heldout_metric
from ..evaluation.windows import ImageWindows, windows_agreement
from ..io.files import check_writable, staged_outputs, temp_path, write_bytes
from ..models.convert import fuse_for_deploy
from .equalize import check_function_preserved, equalize
from .images import calibration_and_heldout
from .names import ConvNames
from .options import QuantizeOptions
from .ptq import exported_openvino, quantize_model
from .sensitivity import layer_sensitivity

__all__ = ['QuantizeOptions', 'Quantization', 'quantize_segmentor',
           'prepare', 'equalize_fused', 'export_fp32',
           'quantize_int8', 'evaluate', 'gate', 'write_ir']


class IRFiles(NamedTuple):
    """What a quantization writes: the IR pair and the report (or None)."""
    xml: str
    binary: str
    report: Optional[str]


@dataclass
class Quantization:
    """A quantization in progress, what each stage hands the next."""
    cfg: Config
    checkpoint: Optional[str]
    files: IRFiles
    #: the fused model (equalized after :func:`equalize_fused`)
    model: nn.Module
    calib: ImageWindows
    heldout: ImageWindows
    calib_from: str
    heldout_from: str
    start: float
    equalization: Optional[dict] = None
    #: the fp32 torch model, its held-out metric, its OpenVINO export
    module: Optional[LogitsModule] = None
    scorer: Any = None
    fp32_model: Any = None
    fp32_error: Optional[float] = None
    names: Optional[ConvNames] = None
    #: ``{--keep-fp32 glob: OpenVINO nodes}``
    kept: Dict[str, List[str]] = field(default_factory=dict)
    sensitivity: Optional[dict] = None
    quantized: Any = None
    report: Optional[dict] = None

    @property
    def shape(self) -> tuple:
        return tuple(self.calib.shape)

    @property
    def kept_nodes(self) -> List[str]:
        return sorted({n for nodes in self.kept.values() for n in nodes})


def prepare(config, checkpoint: Optional[str], out: str,
            options: QuantizeOptions) -> Quantization:
    """Stage 1: the options and outputs checked (``out``: an ``.xml`` that
    does not exist unless ``options.force``), the packages present, the
    config's model loaded and fused, and its calibration and held-out
    images (:func:`.images.calibration_and_heldout`)."""
    start = time.perf_counter()
    out = os.fspath(out)
    if not out.endswith('.xml'):
        raise InputError(f'the INT8 model is an OpenVINO IR: name it '
                         f'*.xml (the .bin is written beside it), got {out}')
    options.check()
    files = IRFiles(*openvino_paths(out), (os.fspath(options.out_json)
                                           if options.out_json else None))
    check_writable([f for f in files if f], options.force)
    require('openvino', 'INT8 quantization')
    require('nncf', 'INT8 quantization')
    require('onnx', 'INT8 quantization (the ONNX export)')
    cfg = as_config(config, options.cfg_options)
    model = load_model(cfg, checkpoint)
    fuse_for_deploy(model)
    images = calibration_and_heldout(cfg, model, options)
    if not options.shape:  # the first image's size
        checked_shape(images.calib.shape, None)
    q = Quantization(cfg, checkpoint, files, model, *images, start=start)
    print_log(f'calibrating on {len(q.calib.items)} {q.calib_from} images '
              f'({q.calib.count()} windows of {q.shape[0]}x{q.shape[1]}); '
              f'agreement on {len(q.heldout.items)} held-out '
              f'{q.heldout_from} images', logger='current')
    return q


def equalized(model: nn.Module, inputs) -> dict:
    """:func:`.equalize.equalize` of the fused ``model`` in place, checked
    exact in fp32 on ``inputs`` before anything is exported. Exact scales
    round the scaled weights (~1e-6 relative on the logits, measured up to
    7e-6 on a random B1g2-fast): where that fails the check, power-of-two
    scales (bit-exact by construction, see there) replace them."""
    before = copy.deepcopy(model)
    report = equalize(model)
    try:
        check = check_function_preserved(before, model, inputs)
    except VerificationError as exc:
        print_log(f'{exc}: equalizing with power-of-two scales instead',
                  logger='current', level=30)
        model.load_state_dict(before.state_dict())
        report = equalize(model, power_of_two=True)
        check = check_function_preserved(before, model, inputs)
    return dict(producers=len(report['pairs']), sweeps=report['sweeps'],
                power_of_two=report['power_of_two'],
                skipped=len(report['skipped']),
                fp32_max_rel_diff=check['max_rel_diff'])


def equalize_fused(q: Quantization, options: QuantizeOptions) -> None:
    """Stage 2: with ``options.equalize``, :func:`equalized` checked on the
    first held-out and calibration windows."""
    if options.equalize:
        q.equalization = equalized(q.model,
                                   [q.heldout.first(), q.calib.first()])


def export_fp32(q: Quantization, options: QuantizeOptions) -> None:
    """Stage 3: the fp32 side: the torch model's forward
    (:class:`LogitsModule`), its held-out metric (``options.metric``), its
    export to OpenVINO (checked on the first held-out window), the names
    of the exported convs and the nodes ``options.keep_fp32`` selects."""
    q.module = LogitsModule(q.model).eval()
    q.scorer = heldout_metric(options.metric, q.cfg, q.model, q.heldout,
                              q.heldout_from, q.module)
    q.fp32_model, q.fp32_error = exported_openvino(
        q.module, (1, 3) + q.shape, check_input=q.heldout.first())
    q.names = ConvNames(q.module, q.fp32_model)
    q.kept = q.names.select(options.keep_fp32)


def quantize_int8(q: Quantization, options: QuantizeOptions) -> None:
    """Stage 4: the per-layer table with ``options.sensitivity``
    (:func:`.sensitivity.layer_sensitivity`), then the INT8 model
    (:func:`.ptq.quantize_model`: NNCF, with accuracy control for
    ``options.max_drop``)."""
    if options.sensitivity is not None:
        ranked = (None if not options.sensitivity else sorted(
            {n for nodes in q.names.select(options.sensitivity,
                                           '--sensitivity').values()
             for n in nodes}, key=list(q.names.modules).index))
        q.sensitivity = layer_sensitivity(
            q.fp32_model, q.calib, q.scorer, q.names, options.preset,
            q.kept_nodes, ranked)
    q.quantized = quantize_model(q.fp32_model, q.calib, options.preset,
                                 q.kept_nodes, q.scorer, options.max_drop,
                                 options.max_fp32_layers)


def _scores(q: Quantization, agreement: dict, int8_run) -> dict:
    """The held-out metric of fp32 and INT8 (``int8_run``), and the
    drop."""
    scores = dict(name=q.scorer.name,
                  fp32=q.scorer(openvino_infer(q.fp32_model))[0],
                  # the agreement is the pooled one just measured
                  int8=(agreement['argmax_agreement_pct']
                        if q.scorer.name == 'agreement' else
                        q.scorer(int8_run)[0]))
    scores['drop'] = scores['fp32'] - scores['int8']
    return scores


def evaluate(q: Quantization, options: QuantizeOptions) -> dict:
    """Stage 5: the report (:func:`quantize_segmentor`'s), from the INT8
    model's agreement with fp32 torch on the held-out windows, the metric
    of both, and the kernels OpenVINO chose for the INT8 model (which convs
    run in INT8; those that do not are named and logged)."""
    int8_run = openvino_infer(q.quantized, 'int8')
    convs = openvino_conv_precisions(int8_run.compiled)
    result = windows_agreement(q.heldout, q.module, int8_run)
    scores = _scores(q, result, int8_run)
    fp32_layers = [q.names.layer(node) for node, kernel in
                   convs['layers'].items() if 'i8' not in kernel.lower()]
    q.report = report = dict(
        config=q.cfg.filename, checkpoint=q.checkpoint, ir=q.files.xml,
        shape=list(q.shape), preset=options.preset,
        calib_split=q.calib_from, calib_images=len(q.calib.items),
        calib_windows=q.calib.count(), heldout_split=q.heldout_from,
        heldout_images=len(q.heldout.items), heldout_windows=result['images'],
        windows_resized=len(q.calib.resized) + len(q.heldout.resized),
        argmax_agreement_pct=result['argmax_agreement_pct'],
        min_window_agreement_pct=result['min_image_agreement_pct'],
        max_rel_error=result['max_rel_error'],
        fp32_max_rel_error=q.fp32_error, min_agreement=options.min_agreement,
        metric=scores, max_drop=options.max_drop,
        equalization=q.equalization,
        keep_fp32={p: [q.names.layer(n) for n in nodes]
                   for p, nodes in q.kept.items()},
        fp32_layers=fp32_layers, convs=convs['convs'],
        int8_convs=convs['int8_convs'], conv_kernels=convs['kernels'])
    if q.sensitivity is not None:
        report['sensitivity'] = q.sensitivity
    print_log(f'INT8 vs fp32 torch on {report["heldout_images"]} held-out '
              f'images: argmax agreement '
              f'{report["argmax_agreement_pct"]:.3f}%, max relative logit '
              f'error {report["max_rel_error"]:.3g}; {scores["name"]} '
              f'{scores["fp32"]:.2f} (fp32) -> {scores["int8"]:.2f} (INT8); '
              f'{convs["int8_convs"]}/{convs["convs"]} convs run in INT8',
              logger='current')
    if fp32_layers:
        print_log(f'{len(fp32_layers)} convs run in fp32: '
                  f'{", ".join(fp32_layers)} ({convs["kernels"]})',
                  logger='current', level=30)
    return report


def gate(q: Quantization, options: QuantizeOptions) -> None:
    """Stage 6: :class:`QuantizationError` -- nothing is written -- when
    accuracy control missed ``options.max_drop``, or the held-out
    agreement with fp32 torch is below ``options.min_agreement`` (%)."""
    report, scores = q.report, q.report['metric']
    if options.max_drop is not None and \
            scores['drop'] > options.max_drop + 1e-9:
        raise QuantizationError(
            f'accuracy control could not keep the {scores["name"]} drop '
            f'within --max-drop {options.max_drop:g}: {scores["fp32"]:.2f} '
            f'(fp32) -> {scores["int8"]:.2f} (INT8) with '
            f'{len(report["fp32_layers"])} layers in fp32; nothing was '
            'written')
    if report['argmax_agreement_pct'] < options.min_agreement:
        raise QuantizationError(
            f'the INT8 model agrees with fp32 torch on '
            f'{report["argmax_agreement_pct"]:.2f}% of the pixels of '
            f'{report["heldout_images"]} held-out {q.heldout_from} images, '
            f'below --min-agreement {options.min_agreement:g}%; nothing was '
            'written (try --max-drop, --preset mixed or more --calib-images)')


def write_ir(q: Quantization) -> None:
    """Stage 7: the IR pair (and the report, with the seconds taken)
    renamed into place together."""
    import openvino as ov
    xml, binary, report_path = q.files
    with staged_outputs([]) as staged:
        tmp_xml = stage_openvino_ir(staged, xml)
        ov.save_model(q.quantized, tmp_xml, compress_to_fp16=False)
        q.report['seconds'] = round(time.perf_counter() - q.start, 1)
        if report_path:
            tmp_json = temp_path(report_path)
            staged[report_path] = tmp_json
            write_bytes((json.dumps(q.report, indent=2) + '\n').encode(),
                        tmp_json, report_path)
    print_log(f'wrote {xml} and {binary} (INT8) in {q.report["seconds"]} s',
              logger='current')


def quantize_segmentor(config, checkpoint: Optional[str], out: str,
                       options: Optional[QuantizeOptions] = None,
                       **fields) -> dict:
    """Quantize a config's fused model to an INT8 OpenVINO IR ``out``
    (``.xml``; the ``.bin`` beside it): the stages of the module docstring.
    ``options``: :class:`QuantizeOptions` (``fields``: keyword arguments of
    it, overriding).

    Writes ``out``, its ``.bin`` and ``options.out_json`` (the report)
    together, or nothing: not when the fp32 export differs from torch
    (> 1e-4 relative), nor when the INT8 model's pixel argmax agreement
    with fp32 torch on the held-out images is below
    ``options.min_agreement`` (%), nor when the metric dropped by more than
    ``options.max_drop`` (:class:`QuantizationError`).

    Returns the report: image and window counts of calibration and
    held-out sets, agreement (pooled pixel argmax agreement %, the worst
    window's, the max relative logit error), the metric (fp32, INT8,
    drop), the fp32 export's error, how many convs run in INT8 (the
    kernels OpenVINO chose) and which layers stay fp32 (the model's
    names), the equalization, and the seconds taken.
    """
    options = replace(options or QuantizeOptions(), **fields)
    q = prepare(config, checkpoint, out, options)
    for stage in (equalize_fused, export_fp32, quantize_int8, evaluate,
                  gate):
        stage(q, options)
    write_ir(q)
    return q.report
