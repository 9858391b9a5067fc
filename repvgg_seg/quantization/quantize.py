"""INT8 post-training quantization of fused segmentors (NNCF on OpenVINO).

:func:`quantize_segmentor` (``tools/quantize.py``) fuses a trained model
(:func:`repvgg_seg.models.convert.fuse_for_deploy`), equalizes it
(:mod:`.equalize`, exact in fp32; on by default), exports it through the
checked ONNX path and quantizes it with NNCF on calibration images
(:class:`repvgg_seg.evaluation.windows.ImageWindows`: the config's test
pipeline, the model's windows): ``nncf.quantize``, or with ``max_drop``
``nncf.quantize_with_accuracy_control``, which keeps the layers that cost
most of a held-out metric (:mod:`.metrics`: mmseg's mIoU, or pixel
agreement) in fp32; layers named by the user stay fp32 through NNCF's
ignored scope (:mod:`.names` maps the model's names to OpenVINO's). It
writes the INT8 OpenVINO IR -- or nothing, when the INT8 model does not
agree with the fp32 torch model closely enough on held-out images (never
calibration images: the val split when calibrating on train, else the
images after the calibration ones).

:func:`quantize_module` is the one export -> quantize path of the
benchmark's INT8 rows and its measured INT8 peak. The OpenVINO model is
constant-folded before NNCF sees it: OpenVINO's ONNX frontend leaves a
grouped conv's weight as ``Constant -> Reshape``, for which NNCF computes
weight scales that OpenVINO's CPU plugin cannot run in INT8, so grouped
convs silently stayed fp32 (the investigation is in docs/benchmarks.md).
Every report counts the convs that run in INT8 from OpenVINO's profile,
and names those that do not.
"""
import contextlib
import copy
import json
import os
import os.path as osp
import sys
import tempfile
import time
from typing import Iterable, Optional, Sequence

import torch
from mmengine.logging import print_log

from ..apis.build import (LogitsModule, checked_shape, default_input_shape,
                          load_model)
from ..backends import require
from ..backends.openvino import (constant_folded, openvino_compile,
                                 openvino_conv_precisions, openvino_infer,
                                 openvino_paths, openvino_read)
from ..config import as_config
from ..deploy.export import export_onnx_file
from ..errors import InputError, QuantizationError, VerificationError
from ..evaluation.agreement import agreement
from ..evaluation.metrics import METRICS, heldout_metric
from ..evaluation.windows import (ImageWindows, build_split, test_mode,
                                  windows_agreement)
from ..io.files import check_writable, staged_outputs, temp_path, write_bytes
from ..models.convert import fuse_for_deploy
from .equalize import check_function_preserved, equalize
from .names import ConvNames

CALIB_SPLITS = ('train', 'val')
PRESETS = ('performance', 'mixed')
#: the fp32 export must match torch this closely before it is quantized
FP32_TOLERANCE = 1e-4
#: held-out generated images are seeded apart from the calibration ones
HELDOUT_SEED = 100000


def _split_images(cfg, model, calib_images: int, calib_split: str,
                  heldout_images: int, generated: bool,
                  shape: Optional[tuple]):
    """The calibration and held-out :class:`ImageWindows`, and where each
    comes from (split name or ``generated``)."""
    if generated:
        if calib_images is None or heldout_images is None:
            raise InputError('with generated inputs, give the numbers of '
                             'calibration and held-out images')
        shape = shape or test_mode(model)[1] or default_input_shape(model)
        calib = ImageWindows.generated(model, range(calib_images), shape)
        heldout = ImageWindows.generated(
            model, range(HELDOUT_SEED, HELDOUT_SEED + heldout_images), shape)
        return calib, heldout, 'generated', 'generated'
    dataset = build_split(cfg, calib_split)
    if calib_images is None:
        calib_images = len(dataset)
    elif len(dataset) < calib_images:
        print_log(f'the {calib_split} split has {len(dataset)} images: '
                  f'calibrating on all of them (asked for {calib_images})',
                  logger='current', level=30)
    calib_indices = range(min(calib_images, len(dataset)))
    if calib_split == 'train':
        heldout_split, held = 'val', build_split(cfg, 'val')
        held_indices = range(len(held) if heldout_images is None
                             else min(heldout_images, len(held)))
    else:
        heldout_split, held = calib_split, dataset
        held_indices = range(len(calib_indices), len(dataset)
                             if heldout_images is None else
                             min(len(dataset),
                                 len(calib_indices) + heldout_images))
        if not held_indices:
            raise InputError(
                f'no held-out images: the {calib_split} split has '
                f'{len(dataset)} images and all are calibration images; '
                f'use --calib-images {max(1, len(dataset) - 1)} or fewer, '
                'or --calib-split train')
    calib = ImageWindows.from_dataset(model, dataset, calib_indices)
    calib.shape = tuple(shape or calib.first_shape())
    heldout = ImageWindows.from_dataset(model, held, held_indices,
                                        calib.shape)
    return calib, heldout, calib_split, heldout_split


# --------------------------------------------------------------------------
# quantization


def _check_arguments(out, calib_images, calib_split, preset, min_agreement,
                     heldout_images, max_drop=None, metric='auto',
                     max_fp32_layers=None) -> None:
    if not str(out).endswith('.xml'):
        raise InputError(f'the INT8 model is an OpenVINO IR: name it '
                         f'*.xml (the .bin is written beside it), got {out}')
    if calib_images is not None and calib_images < 1:
        raise InputError(f'--calib-images must be at least 1, got '
                         f'{calib_images}')
    if heldout_images is not None and heldout_images < 1:
        raise InputError(f'--heldout-images must be at least 1, got '
                         f'{heldout_images}')
    if calib_split not in CALIB_SPLITS:
        raise InputError(f'unknown calibration split {calib_split!r}; '
                         f'valid: {", ".join(CALIB_SPLITS)}')
    if preset not in PRESETS:
        raise InputError(f'unknown preset {preset!r}; valid: '
                         f'{", ".join(PRESETS)}')
    if not 0 <= min_agreement <= 100:
        raise InputError(f'--min-agreement is a percentage (0-100), got '
                         f'{min_agreement:g}')
    if max_drop is not None and not 0 <= max_drop <= 100:
        raise InputError(f'--max-drop is a drop of the metric in points '
                         f'(0-100), got {max_drop:g}')
    if max_fp32_layers is not None and (max_drop is None
                                        or max_fp32_layers < 1):
        raise InputError('--max-fp32-layers caps the layers --max-drop '
                         'keeps in fp32: give --max-drop, and a count >= 1, '
                         f'got {max_fp32_layers}')
    if metric not in METRICS:
        raise InputError(f'unknown metric {metric!r}; valid: '
                         f'{", ".join(METRICS)}')


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
    that cost most of ``metric`` (:mod:`.metrics`, on its held-out items)
    in fp32 until the INT8 model's metric is within ``max_drop`` points of
    the fp32 model's, reverting ``max_fp32_layers`` at most. NNCF's
    progress bars go to stderr (stdout is for the
    tools' results). ``ov_model`` is not changed."""
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
    """``module`` (a fused :class:`LogitsModule`, or any exportable module)
    exported to ONNX at ``input_shape`` through the checked export and read
    by OpenVINO, constant-folded: ``(openvino.Model, fp32 error)``. With
    ``check_input`` it must match torch on it within
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


def int8_profile(quantized, x: torch.Tensor,
                 threads: Optional[int] = None) -> dict:
    """:func:`~repvgg_seg.backends.openvino.openvino_conv_precisions` of the INT8 model on
    ``x``, from a compilation of its own (the timed ones run without the
    per-node counters)."""
    return openvino_conv_precisions(
        openvino_compile(quantized, 'int8', threads, profile=True), x)


def quantize_module(module: torch.nn.Module, input_shape: Sequence[int],
                    calibration: Iterable[torch.Tensor],
                    preset: str = 'performance',
                    check_input: Optional[torch.Tensor] = None,
                    threads: Optional[int] = None) -> tuple:
    """The one export -> quantize path (:func:`exported_openvino`, then
    :func:`quantize_model`), for the benchmark's INT8 rows and engine.
    Returns ``(quantized openvino.Model, profile)``; the profile is
    :func:`int8_profile` on ``check_input`` or the first calibration input,
    plus ``fp32_max_rel_error`` when checked."""
    fp32_model, error = exported_openvino(module, input_shape, check_input)
    quantized = quantize_model(fp32_model, calibration, preset)
    first = check_input if check_input is not None else next(
        iter(calibration))
    profile = int8_profile(quantized, first, threads)
    if error is not None:
        profile['fp32_max_rel_error'] = error
    return quantized, profile


def layer_sensitivity(fp32_model, calibration, metric, names: ConvNames,
                      preset: str = 'performance',
                      keep_fp32: Sequence[str] = (),
                      nodes: Optional[Sequence[str]] = None) -> dict:
    """The per-layer table of ``--sensitivity``: the held-out ``metric``
    of the INT8 model with every layer quantized, and with each of
    ``nodes`` (OpenVINO conv nodes; default every exported layer) alone
    left in fp32 (besides ``keep_fp32``), sorted by what that gains.
    Ranked this way rather than by quantizing one layer at a time: the
    gain is what ``--keep-fp32 LAYER`` would give, errors of the other
    layers included (they compound along the chain), and it is how NNCF's
    accuracy control ranks the layers it reverts."""
    from mmengine.utils import ProgressBar

    def score(nodes):
        quantized = quantize_model(fp32_model, calibration, preset,
                                   keep_fp32=list(keep_fp32) + nodes)
        return metric(openvino_infer(quantized, 'int8'))[0]

    fp32 = metric(openvino_infer(fp32_model))[0]
    all_int8 = score([])
    rows = []
    nodes = [n for n in (names.modules if nodes is None else nodes)
             if n not in keep_fp32]
    bar = ProgressBar(len(nodes), file=sys.stderr)
    for node in nodes:
        value = score([node])
        rows.append(dict(layer=names.layer(node), node=node,
                         metric_with_layer_fp32=round(value, 3),
                         gain=round(value - all_int8, 3)))
        bar.update()
    sys.stderr.write('\n')
    rows.sort(key=lambda r: -r['gain'])
    return dict(metric=metric.name, fp32=round(fp32, 3),
                all_int8=round(all_int8, 3), layers=rows)


def _equalized(model, inputs: Sequence[torch.Tensor]) -> dict:
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


def quantize_segmentor(config, checkpoint: Optional[str], out: str,
                       shape: Optional[Sequence[int]] = None,
                       calib_images: Optional[int] = 50,
                       calib_split: str = 'train',
                       preset: str = 'performance',
                       min_agreement: float = 98.0,
                       heldout_images: Optional[int] = 20,
                       generated: bool = False,
                       force: bool = False,
                       cfg_options: Optional[dict] = None,
                       out_json: Optional[str] = None,
                       equalize_model: bool = True,
                       metric: str = 'auto',
                       max_drop: Optional[float] = None,
                       max_fp32_layers: Optional[int] = None,
                       keep_fp32: Sequence[str] = (),
                       sensitivity: Optional[Sequence[str]] = None
                       ) -> dict:
    """Quantize a config's fused model to an INT8 OpenVINO IR; see the
    module docstring.

    ``calib_images``/``heldout_images``: ``None`` takes every image of the
    split (held out: every one that is not a calibration image).
    ``equalize_model``: cross-layer equalization first (:mod:`.equalize`;
    exact in fp32, checked to 1e-5). ``metric`` (:data:`.metrics.METRICS`)
    is scored on the held-out images for fp32 and INT8; with ``max_drop``
    (points) NNCF's accuracy control keeps layers in fp32 until INT8 is
    within it, with ``max_fp32_layers`` layers in fp32 at most.
    ``keep_fp32``: globs of layer names (``backbone.stage4.*``)
    left in fp32. ``sensitivity``: the per-layer table
    (:func:`layer_sensitivity`) in the report, for the layers these globs
    select (``[]``: every layer; ``None``: no table).

    Writes ``out`` (``.xml``) and its ``.bin`` (and ``out_json``, the
    report) together, or nothing: not when the fp32 export differs from
    torch (> 1e-4 relative), nor when the INT8 model's pixel argmax
    agreement with fp32 torch on the held-out images is below
    ``min_agreement`` (%), nor when the metric dropped by more than
    ``max_drop`` (:class:`QuantizationError`).

    Returns the report: image and window counts of calibration and
    held-out sets, agreement (pooled pixel argmax agreement %, the worst
    window's, the max relative logit error), the metric (fp32, INT8,
    drop), the fp32 export's error, how many convs run in INT8
    (OpenVINO's profile) and which layers stay fp32 (the model's names),
    the equalization, and the seconds taken.
    """
    start = time.perf_counter()
    out = os.fspath(out)
    _check_arguments(out, calib_images, calib_split, preset, min_agreement,
                     heldout_images, max_drop, metric, max_fp32_layers)
    xml, binary = openvino_paths(out)
    targets = [xml, binary] + ([os.fspath(out_json)] if out_json else [])
    check_writable(targets, force)
    require('openvino', 'INT8 quantization')
    require('nncf', 'INT8 quantization')
    require('onnx', 'INT8 quantization (the ONNX export)')
    cfg = as_config(config, cfg_options)
    model = load_model(cfg, checkpoint)
    fuse_for_deploy(model)
    if shape:
        shape = checked_shape(shape, None)
    calib, heldout, calib_from, heldout_from = _split_images(
        cfg, model, calib_images, calib_split, heldout_images, generated,
        shape)
    shape = tuple(calib.shape)
    checked_shape(shape, None)
    print_log(f'calibrating on {len(calib.items)} {calib_from} images '
              f'({calib.count()} windows of {shape[0]}x{shape[1]}); '
              f'agreement on {len(heldout.items)} held-out {heldout_from}'
              ' images', logger='current')

    first = heldout.first()
    equalization = None
    if equalize_model:
        equalization = _equalized(model, [first, calib.first()])
    module = LogitsModule(model).eval()
    scorer = heldout_metric(metric, cfg, model, heldout, heldout_from,
                            module)
    fp32_model, fp32_error = exported_openvino(module, (1, 3) + shape,
                                               check_input=first)
    names = ConvNames(module, fp32_model)
    kept = names.select(keep_fp32)
    kept_nodes = sorted({n for nodes in kept.values() for n in nodes})
    table = None
    if sensitivity is not None:
        ranked = (None if not sensitivity else sorted(
            {n for nodes in names.select(sensitivity, '--sensitivity').values()
             for n in nodes}, key=list(names.modules).index))
        table = layer_sensitivity(fp32_model, calib, scorer, names, preset,
                                  kept_nodes, ranked)
    quantized = quantize_model(fp32_model, calib, preset, kept_nodes,
                               scorer, max_drop, max_fp32_layers)
    convs = int8_profile(quantized, first)
    result = windows_agreement(heldout, module, openvino_infer(quantized,
                                                               'int8'))
    scores = dict(name=scorer.name,
                  fp32=scorer(openvino_infer(fp32_model))[0],
                  # the agreement is the pooled one just measured
                  int8=(result['argmax_agreement_pct']
                        if scorer.name == 'agreement' else
                        scorer(openvino_infer(quantized, 'int8'))[0]))
    scores['drop'] = scores['fp32'] - scores['int8']
    fp32_layers = [names.layer(node) for node, kernel in
                   convs['layers'].items() if 'i8' not in kernel.lower()]
    report = dict(
        config=cfg.filename, checkpoint=checkpoint, ir=xml,
        shape=list(shape), preset=preset, calib_split=calib_from,
        calib_images=len(calib.items), calib_windows=calib.count(),
        heldout_split=heldout_from, heldout_images=len(heldout.items),
        heldout_windows=result['images'],
        windows_resized=len(calib.resized) + len(heldout.resized),
        argmax_agreement_pct=result['argmax_agreement_pct'],
        min_window_agreement_pct=result['min_image_agreement_pct'],
        max_rel_error=result['max_rel_error'],
        fp32_max_rel_error=fp32_error, min_agreement=min_agreement,
        metric=scores, max_drop=max_drop, equalization=equalization,
        keep_fp32={p: [names.layer(n) for n in nodes]
                   for p, nodes in kept.items()},
        fp32_layers=fp32_layers,
        convs=convs['convs'], int8_convs=convs['int8_convs'],
        conv_kernels=convs['kernels'])
    if table is not None:
        report['sensitivity'] = table
    print_log(f'INT8 vs fp32 torch on {report["heldout_images"]} held-out '
              f'images: argmax agreement '
              f'{report["argmax_agreement_pct"]:.3f}%, max relative logit '
              f'error {report["max_rel_error"]:.3g}; {scorer.name} '
              f'{scores["fp32"]:.2f} (fp32) -> {scores["int8"]:.2f} (INT8); '
              f'{convs["int8_convs"]}/{convs["convs"]} convs run in INT8',
              logger='current')
    if fp32_layers:
        print_log(f'{len(fp32_layers)} convs run in fp32: '
                  f'{", ".join(fp32_layers)} ({convs["kernels"]})',
                  logger='current', level=30)
    if max_drop is not None and scores['drop'] > max_drop + 1e-9:
        raise QuantizationError(
            f'accuracy control could not keep the {scorer.name} drop within '
            f'--max-drop {max_drop:g}: {scores["fp32"]:.2f} (fp32) -> '
            f'{scores["int8"]:.2f} (INT8) with {len(fp32_layers)} layers in '
            'fp32; nothing was written')
    if report['argmax_agreement_pct'] < min_agreement:
        raise QuantizationError(
            f'the INT8 model agrees with fp32 torch on '
            f'{report["argmax_agreement_pct"]:.2f}% of the pixels of '
            f'{report["heldout_images"]} held-out {heldout_from} images, '
            f'below --min-agreement {min_agreement:g}%; nothing was written '
            '(try --max-drop, --preset mixed or more --calib-images)')
    _write(quantized, xml, binary, report, out_json, start)
    return report


def _write(quantized, xml: str, binary: str, report: dict,
           out_json: Optional[str], start: float) -> None:
    """The IR pair (and the report) renamed into place together."""
    import openvino as ov
    with staged_outputs([]) as staged:
        tmp_xml = temp_path(xml)
        # save_model writes x.bin beside x.xml: the pair is renamed
        # together, the .bin first
        staged[binary] = osp.splitext(tmp_xml)[0] + '.bin'
        staged[xml] = tmp_xml
        ov.save_model(quantized, tmp_xml, compress_to_fp16=False)
        report['seconds'] = round(time.perf_counter() - start, 1)
        if out_json:
            tmp_json = temp_path(out_json)
            staged[out_json] = tmp_json
            write_bytes((json.dumps(report, indent=2) + '\n').encode(),
                        tmp_json, out_json)
    print_log(f'wrote {xml} and {binary} (INT8) in {report["seconds"]} s',
              logger='current')
