"""INT8 post-training quantization of fused segmentors (NNCF on OpenVINO).

:func:`quantize_segmentor` (``tools/quantize.py``) fuses a trained model
(:func:`repvgg_seg.models.convert.fuse_for_deploy`), exports it through the
checked ONNX path (:func:`repvgg_seg.deploy.export.export_onnx_file`),
quantizes it with ``nncf.quantize`` on calibration images and writes the
INT8 OpenVINO IR, or nothing when the INT8 model does not agree with the
fp32 torch model closely enough on held-out images.

Calibration and held-out inputs
-------------------------------
Real images go through the config's own test pipeline (``LoadAnnotations``
dropped: no labels are needed) and the model's data preprocessor, exactly as
mmseg's test loop feeds the model, and are cut into the windows the model's
``test_cfg`` sees: the ``crop_size`` windows of ``slide_inference`` (the
same boxes), or the whole image. The IR has a static input shape: by default
the slide crop, or the first image's preprocessed size for whole-image
inference; a window of another size (an image smaller than the crop, or an
explicit ``shape``) is resized to it, and counted in the report.
Held-out images -- on which the agreement is measured -- are never
calibration images: the val split when calibrating on train, else the
images after the calibration ones. Generated inputs
(:func:`repvgg_seg.deploy.verify.synthetic_image`) are used only when asked
for (``generated=True``), e.g. for speed measurements without a data set.

Why RepVGG's grouped convs stayed in fp32, and the fix
------------------------------------------------------
Quantizing the IR that ``Core().read_model('x.onnx')`` returns leaves every
``GroupConvolution`` (the g2/g4 archs' grouped 3x3 convs) running OpenVINO's
fp32 kernel (``brgconv_avx512_f32``) while dense convs run INT8: B1g2-fast
gained 2.75x from INT8 where R50 gained 4.1x. The cause is one level below
NNCF's settings: ONNX stores a grouped conv's weight as ``[Cout, Cin/g, k,
k]`` and OpenVINO's ONNX frontend emits it as ``Constant -> Reshape`` to the
``[g, Cout/g, Cin/g, k, k]`` layout of ``GroupConvolution``, without folding
the Reshape. NNCF looks through that Reshape for the weight's shape and
computes the weight quantizer's ranges for the 4-d ``[Cout, Cin/g, k, k]``
tensor (reduced over axes 2, 3), but applies them to the 5-d weight: the
ranges come out shaped ``[g, Cout/g, 1, 1, k]`` (per-tensor weights:
``[k]``), varying along the kernel width. OpenVINO's CPU plugin runs a conv
in INT8 only with per-output-channel weight scales
(``WeightableLayerTransformation::canBeTransformed``), so it keeps the fp32
kernel and computes the FakeQuantize on its own. Measured on the stock INT8
model: folding the Reshape alone, keeping NNCF's ranges, stays fp32;
per-output-channel ranges behind the Reshape run INT8. No NNCF option
changes this (``target_device=CPU``, ``model_type=TRANSFORMER``,
``overflow_fix`` off, per-tensor weights: all measured). Folding the model's
constant subgraphs *before* quantizing (OpenVINO's ``ConstantFolding`` pass,
:func:`repvgg_seg.deploy.runtimes.constant_folded`; ``ov.convert_model``
does the same) gives NNCF a plain 5-d ``Constant`` weight, whose ranges it
computes per output channel like any other, and every ``GroupConvolution``
then runs ``brgconv_avx512_I8``/``jit_avx512_I8``. So the fix belongs to the
quantization step, not to a rewrite of the model (splitting the groups into
dense convs, or block-diagonal weights, measured slower); the folded model
computes the same fp32 function (tested to 1e-5), and the report counts the
convs that run in INT8 from OpenVINO's profile, so a fallback to fp32
shows.
"""
import contextlib
import copy
import json
import os
import os.path as osp
import sys
import tempfile
import time
from typing import Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.registry import DefaultScope
from mmengine.utils import ProgressBar

from ..config import as_config
from ..errors import InputError, QuantizationError, VerificationError
from ..io.files import (check_writable, staged_outputs, temp_path,
                        write_bytes)
from ..models.convert import fuse_for_deploy
from .build import LogitsModule, checked_shape, default_input_shape, load_model
from .export import export_onnx_file
from .runtimes import (constant_folded, openvino_compile,
                       openvino_conv_precisions, openvino_infer,
                       openvino_paths, openvino_read, require)
from .verify import agreement, pooled_agreement, preprocess, synthetic_image

CALIB_SPLITS = ('train', 'val')
PRESETS = ('performance', 'mixed')
#: the fp32 export must match torch this closely before it is quantized
FP32_TOLERANCE = 1e-4
#: held-out generated images are seeded apart from the calibration ones
HELDOUT_SEED = 100000


# --------------------------------------------------------------------------
# the images: a split of the config's data, through its test pipeline


def _test_pipeline(cfg, annotations: bool = False) -> list:
    """The pipeline the test loop runs (without ``LoadAnnotations`` unless
    ``annotations``: calibration needs no labels)."""
    for key in ('test_dataloader', 'val_dataloader'):
        dataset = (cfg.get(key) or {}).get('dataset') or {}
        while 'pipeline' not in dataset and 'dataset' in dataset:
            dataset = dataset['dataset']  # a wrapper (RepeatDataset ...)
        if dataset.get('pipeline'):
            pipeline = dataset['pipeline']
            break
    else:
        pipeline = cfg.get('test_pipeline')
    if not pipeline:
        raise InputError(f'config {cfg.filename} has no test pipeline '
                         '(test_dataloader.dataset.pipeline)')
    return [copy.deepcopy(t) for t in pipeline
            if annotations or t.get('type') != 'LoadAnnotations']


def _data_folder(dataset_cfg: dict) -> str:
    prefix = dataset_cfg.get('data_prefix') or {}
    return osp.join(dataset_cfg.get('data_root') or '',
                    prefix.get('img_path', ''))


def build_split(cfg, split: str, annotations: bool = False):
    """The ``split`` (train, val) data set of the config, with the test
    pipeline (mmseg's ``DATASETS``; labels only with ``annotations``);
    :class:`InputError` when it is missing or empty."""
    from mmseg.registry import DATASETS
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    loader = cfg.get(f'{split}_dataloader')
    if not loader or not loader.get('dataset'):
        raise InputError(f'config {cfg.filename} has no {split}_dataloader '
                         'to take images from')
    dataset_cfg = copy.deepcopy(loader['dataset'])
    inner = dataset_cfg
    while 'pipeline' not in inner and 'dataset' in inner:
        inner = inner['dataset']
    inner['pipeline'] = _test_pipeline(cfg, annotations)
    # one process reads it: no serialization (which also fails, obscurely,
    # on an empty split)
    inner['serialize_data'] = False
    folder = _data_folder(inner)
    if inner.get('data_root') is not None and not osp.isdir(folder):
        raise InputError(f'the {split} split has no images: {folder} is '
                         'missing')
    try:
        with DefaultScope.overwrite_default_scope('mmseg'):
            dataset = DATASETS.build(dataset_cfg)
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise InputError(f'the {split} split has no images: {folder} is '
                         f'missing ({exc.strerror or exc})') from None
    except (KeyError, TypeError, ValueError, AssertionError) as exc:
        raise InputError(f'cannot build the {split} split of '
                         f'{cfg.filename}: {exc}') from None
    if len(dataset) == 0:
        raise InputError(f'the {split} split has no images (in {folder})')
    return dataset


def slide_boxes(height: int, width: int, crop: Sequence[int],
                stride: Sequence[int]) -> List[Tuple[int, int, int, int]]:
    """The ``(y1, y2, x1, x2)`` windows of mmseg's
    ``EncoderDecoder.slide_inference`` on an ``height x width`` input."""
    (h_crop, w_crop), (h_stride, w_stride) = crop, stride
    h_grids = max(height - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(width - w_crop + w_stride - 1, 0) // w_stride + 1
    boxes = []
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y2 = min(h_idx * h_stride + h_crop, height)
            x2 = min(w_idx * w_stride + w_crop, width)
            boxes.append((max(y2 - h_crop, 0), y2, max(x2 - w_crop, 0), x2))
    return boxes


def test_mode(model) -> Tuple[str, Optional[tuple], Optional[tuple]]:
    """``('slide', crop, stride)`` or ``('whole', None, None)`` from the
    segmentor's ``test_cfg``."""
    test_cfg = getattr(model, 'test_cfg', None) or {}
    if test_cfg.get('mode', 'whole') == 'slide':
        return ('slide', tuple(test_cfg['crop_size']),
                tuple(test_cfg['stride']))
    return 'whole', None, None


class Windows:
    """The model inputs of some images: each image preprocessed (test
    pipeline, data preprocessor) and cut into the windows the model sees,
    resized to ``shape`` where they differ. Re-iterable and lazy (images
    are decoded when iterated: a calibration set of 713x713 windows does
    not fit in memory), so NNCF can make several passes.

    ``source``: a data set and the indices of its images, or ``None`` and
    the seeds of generated images (of size ``shape``).
    """

    def __init__(self, model, dataset, indices: Sequence[int],
                 shape: Optional[Tuple[int, int]] = None):
        self.model = model
        self.dataset = dataset
        self.indices = list(indices)
        self.mode, self.crop, self.stride = test_mode(model)
        self.shape = shape
        self.counts = None  # windows per image, known after one pass
        self.resized = set()  # (image, window) resized to ``shape``

    def image(self, index: int) -> torch.Tensor:
        """One image as the model's data preprocessor makes it
        (1x3xHxW)."""
        if self.dataset is None:
            return preprocess(self.model, synthetic_image(*self.shape,
                                                          seed=index))
        sample = self.dataset[index]
        data = self.model.data_preprocessor(
            dict(inputs=[sample['inputs']],
                 data_samples=[sample['data_samples']]), False)
        return data['inputs'].float()

    def first_shape(self) -> Tuple[int, int]:
        """The size of the first window (the IR's default input shape)."""
        if self.mode == 'slide':
            return self.crop
        return tuple(self.image(self.indices[0]).shape[-2:])

    def windows_of(self, index: int) -> Iterator[torch.Tensor]:
        x = self.image(index)
        if self.mode == 'slide':
            crops = [x[:, :, y1:y2, x1:x2] for y1, y2, x1, x2 in
                     slide_boxes(*x.shape[-2:], self.crop, self.stride)]
        else:
            crops = [x]
        for k, crop in enumerate(crops):
            if tuple(crop.shape[-2:]) != tuple(self.shape):
                self.resized.add((index, k))
                crop = F.interpolate(crop, size=self.shape, mode='bilinear',
                                     align_corners=False)
            yield crop.contiguous()

    def __iter__(self) -> Iterator[torch.Tensor]:
        counts = []
        for index in self.indices:
            n = 0
            for window in self.windows_of(index):
                n += 1
                yield window
            counts.append(n)
        self.counts = counts

    def count(self) -> int:
        """How many windows (one pass over the images when not known)."""
        if self.counts is None:
            if self.mode == 'whole':
                self.counts = [1] * len(self.indices)
            else:
                for _ in self:
                    pass
        return sum(self.counts)

    def __len__(self) -> int:
        return self.count()


def _split_images(cfg, model, calib_images: int, calib_split: str,
                  heldout_images: int, generated: bool,
                  shape: Optional[Tuple[int, int]]):
    """The calibration and held-out :class:`Windows`, and a description of
    each (split, image count)."""
    if generated:
        if calib_images is None or heldout_images is None:
            raise InputError('with generated inputs, give the numbers of '
                             'calibration and held-out images')
        mode, crop, _ = test_mode(model)
        shape = shape or crop or default_input_shape(model)
        calib = Windows(model, None, range(calib_images), shape)
        heldout = Windows(model, None, range(HELDOUT_SEED, HELDOUT_SEED
                                             + heldout_images), shape)
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
    calib = Windows(model, dataset, calib_indices)
    calib.shape = shape or calib.first_shape()
    heldout = Windows(model, held, held_indices, calib.shape)
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


def quantize_model(ov_model, calibration: Windows,
                   preset: str = 'performance'):
    """``nncf.quantize`` of an ``openvino.Model`` on the calibration
    windows, after the constant folding that lets NNCF quantize grouped
    convs (see the module docstring). NNCF's progress bars go to stderr
    (stdout is for the tools' results)."""
    import nncf
    dataset = nncf.Dataset(calibration, lambda x: x.numpy())
    preset = {'performance': nncf.QuantizationPreset.PERFORMANCE,
              'mixed': nncf.QuantizationPreset.MIXED}[preset]
    with contextlib.redirect_stdout(sys.stderr):
        return nncf.quantize(constant_folded(ov_model), dataset,
                             preset=preset, subset_size=len(calibration))


def _heldout_agreement(module, run, heldout: Windows) -> dict:
    """The INT8 model's agreement with fp32 torch, pooled over every window
    of the held-out images (progress on stderr)."""
    per_window = []
    progress = ProgressBar(len(heldout.indices), file=sys.stderr)
    for index in heldout.indices:
        for x in heldout.windows_of(index):
            with torch.no_grad():
                reference = module(x)
            per_window.append(agreement(reference, run(x)))
        progress.update()
    sys.stderr.write('\n')
    return pooled_agreement(per_window)


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
    print_log(f'calibrating on {len(calib.indices)} {calib_from} images '
              f'({calib.count()} windows of {shape[0]}x{shape[1]}); '
              f'agreement on {len(heldout.indices)} held-out {heldout_from}'
              ' images', logger='current')

    with tempfile.TemporaryDirectory(prefix='repvgg_int8_') as tmp:
        onnx_path = osp.join(tmp, 'model.onnx')
        export_onnx_file(module, onnx_path, (1, 3) + shape)
        fp32_model = openvino_read(onnx_path)
        first = next(heldout.windows_of(heldout.indices[0]))
        heldout.resized.clear()  # counted when the held-out set is run
        with torch.no_grad():
            reference = module(first)
        fp32_error = agreement(reference, openvino_infer(
            constant_folded(fp32_model.clone()))(first))['max_rel_error']
        if fp32_error > FP32_TOLERANCE:
            raise VerificationError(
                f'the exported fp32 model differs from torch: max relative '
                f'logit error {fp32_error:.3g} > {FP32_TOLERANCE:g}; '
                'nothing was written')
        quantized = quantize_model(fp32_model, calib, preset)

    compiled = openvino_compile(quantized, 'int8', profile=True)
    convs = openvino_conv_precisions(compiled, first)
    result = _heldout_agreement(module, openvino_infer(None,
                                                       compiled=compiled),
                                heldout)
    report = dict(
        config=cfg.filename, checkpoint=checkpoint, ir=xml,
        shape=list(shape), preset=preset, calib_split=calib_from,
        calib_images=len(calib.indices), calib_windows=calib.count(),
        heldout_split=heldout_from, heldout_images=len(heldout.indices),
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
