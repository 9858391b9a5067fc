"""INT8 post-training quantization of fused segmentors (NNCF on OpenVINO).

:func:`quantize_segmentor` (``tools/quantize.py``) fuses a trained model
(:func:`repvgg_seg.models.convert.fuse_for_deploy`), exports it through the
checked ONNX path and quantizes it with ``nncf.quantize`` on calibration
images (:class:`repvgg_seg.deploy.inputs.ImageWindows`: the config's test
pipeline, the model's windows), then writes the INT8 OpenVINO IR -- or
nothing, when the INT8 model does not agree with the fp32 torch model
closely enough on held-out images (never calibration images: the val split
when calibrating on train, else the images after the calibration ones).

:func:`quantize_module` is the one export -> read -> fold -> quantize path,
shared by the tool, the benchmark's INT8 rows and the INT8 conv ceiling.
It constant-folds the OpenVINO model before NNCF sees it: OpenVINO's ONNX
frontend leaves a grouped conv's weight as ``Constant -> Reshape``, for
which NNCF computes weight scales that OpenVINO's CPU plugin cannot run in
INT8, so grouped convs silently stayed fp32 (the investigation is in
docs/benchmarks.md). Every report counts the convs that run in INT8 from
OpenVINO's profile, so such a fallback shows.
"""
import contextlib
import json
import os
import os.path as osp
import sys
import tempfile
import time
from typing import Iterable, Optional, Sequence

import torch
from mmengine.logging import print_log

from ..config import as_config
from ..errors import InputError, QuantizationError, VerificationError
from ..io.files import (check_writable, staged_outputs, temp_path,
                        write_bytes)
from ..models.convert import fuse_for_deploy
from .build import LogitsModule, checked_shape, default_input_shape, load_model
from .export import export_onnx_file
from .inputs import ImageWindows, build_split, test_mode, windows_agreement
from .runtimes import (constant_folded, openvino_compile,
                       openvino_conv_precisions, openvino_infer,
                       openvino_paths, openvino_read, require)
from .verify import agreement

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
                     heldout_images) -> None:
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


def quantize_model(ov_model, calibration: Iterable[torch.Tensor],
                   preset: str = 'performance'):
    """``nncf.quantize`` of an ``openvino.Model`` on the calibration inputs
    (an iterable of model inputs with ``len``, re-iterable), after the
    constant folding that lets NNCF quantize grouped convs (see the module
    docstring). NNCF's progress bars go to stderr (stdout is for the tools'
    results)."""
    import nncf
    dataset = nncf.Dataset(calibration, lambda x: x.numpy())
    preset = {'performance': nncf.QuantizationPreset.PERFORMANCE,
              'mixed': nncf.QuantizationPreset.MIXED}[preset]
    with contextlib.redirect_stdout(sys.stderr):
        return nncf.quantize(constant_folded(ov_model), dataset,
                             preset=preset, subset_size=len(calibration))


def quantize_module(module: torch.nn.Module, input_shape: Sequence[int],
                    calibration: Iterable[torch.Tensor],
                    preset: str = 'performance',
                    check_input: Optional[torch.Tensor] = None,
                    threads: Optional[int] = None) -> tuple:
    """The one export -> quantize path: ``module`` (a fused
    :class:`LogitsModule`, or any exportable module) exported to ONNX at
    ``input_shape`` through the checked export, read by OpenVINO and
    quantized by :func:`quantize_model`.

    With ``check_input``, the fp32 OpenVINO model must match torch on it
    within :data:`FP32_TOLERANCE` first (:class:`VerificationError`).
    Returns ``(quantized openvino.Model, profile)``; the profile is
    :func:`~.runtimes.openvino_conv_precisions` on the first calibration
    input (how many convs run in INT8, their kernels) plus
    ``fp32_max_rel_error`` when checked.
    """
    profile = {}
    with tempfile.TemporaryDirectory(prefix='repvgg_int8_') as tmp:
        onnx_path = osp.join(tmp, 'model.onnx')
        export_onnx_file(module, onnx_path, tuple(input_shape))
        fp32_model = openvino_read(onnx_path)
        if check_input is not None:
            with torch.no_grad():
                reference = module(check_input)
            error = agreement(reference, openvino_infer(
                constant_folded(fp32_model.clone()))(check_input))[
                    'max_rel_error']
            if error > FP32_TOLERANCE:
                raise VerificationError(
                    f'the exported fp32 model differs from torch: max '
                    f'relative logit error {error:.3g} > '
                    f'{FP32_TOLERANCE:g}; nothing was written')
            profile['fp32_max_rel_error'] = error
        quantized = quantize_model(fp32_model, calibration, preset)
    first = check_input if check_input is not None else next(
        iter(calibration))
    # the profile from a separate compilation: the timed ones run without
    # the per-node counters
    profile.update(openvino_conv_precisions(
        openvino_compile(quantized, 'int8', threads, profile=True), first))
    return quantized, profile


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
                       out_json: Optional[str] = None) -> dict:
    """Quantize a config's fused model to an INT8 OpenVINO IR; see the
    module docstring.

    ``calib_images``/``heldout_images``: ``None`` takes every image of the
    split (held out: every one that is not a calibration image).
    Writes ``out`` (``.xml``) and its ``.bin`` (and ``out_json``, the
    report) together, or nothing: not when the fp32 export differs from
    torch (> 1e-4 relative), nor when the INT8 model's pixel argmax
    agreement with fp32 torch on the held-out images is below
    ``min_agreement`` (%) (:class:`QuantizationError`).

    Returns the report: image and window counts of calibration and
    held-out sets, agreement (pooled pixel argmax agreement %, the worst
    window's, the max relative logit error), the fp32 export's error, how
    many convs run in INT8 (OpenVINO's profile) and the seconds taken.
    """
    start = time.perf_counter()
    out = os.fspath(out)
    _check_arguments(out, calib_images, calib_split, preset, min_agreement,
                     heldout_images)
    xml, binary = openvino_paths(out)
    targets = [xml, binary] + ([os.fspath(out_json)] if out_json else [])
    check_writable(targets, force)
    require('openvino', 'INT8 quantization')
    require('nncf', 'INT8 quantization')
    require('onnx', 'INT8 quantization (the ONNX export)')
    cfg = as_config(config, cfg_options)
    model = load_model(cfg, checkpoint)
    fuse_for_deploy(model)
    module = LogitsModule(model).eval()
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
    quantized, convs = quantize_module(module, (1, 3) + shape, calib,
                                       preset, check_input=first)
    fp32_error = convs['fp32_max_rel_error']
    result = windows_agreement(heldout, module, openvino_infer(quantized,
                                                               'int8'))
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
        convs=convs['convs'], int8_convs=convs['int8_convs'],
        conv_kernels=convs['kernels'])
    print_log(f'INT8 vs fp32 torch on {report["heldout_images"]} held-out '
              f'images: argmax agreement '
              f'{report["argmax_agreement_pct"]:.3f}%, max relative logit '
              f'error {report["max_rel_error"]:.3g}; {convs["int8_convs"]}/'
              f'{convs["convs"]} convs run in INT8', logger='current')
    if convs['int8_convs'] < convs['convs']:
        print_log(f'{convs["convs"] - convs["int8_convs"]} convs run in '
                  f'fp32: {convs["kernels"]}', logger='current', level=30)
    if report['argmax_agreement_pct'] < min_agreement:
        raise QuantizationError(
            f'the INT8 model agrees with fp32 torch on '
            f'{report["argmax_agreement_pct"]:.2f}% of the pixels of '
            f'{report["heldout_images"]} held-out {heldout_from} images, '
            f'below --min-agreement {min_agreement:g}%; nothing was written '
            '(try --preset mixed or more --calib-images)')
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
