"""The images a deployed model is calibrated, checked and timed on.

One source for INT8 calibration and held-out agreement
(:mod:`.quantize`), the benchmark's agreement and calibration images
(:mod:`repvgg_seg.bench`) and the engines' checks: :class:`ImageWindows`.
Its images come from a split of the config's data set, from image files, or
are generated (:func:`repvgg_seg.evaluation.agreement.synthetic_image`; for speed
only). Real images go through the config's own test pipeline
(``LoadAnnotations`` dropped unless asked for) and the model's data
preprocessor, exactly as mmseg's test loop feeds the model, and are cut into
the windows the model's ``test_cfg`` sees. The windows of a sliding-window
model are taken from mmseg itself: :func:`model_windows` runs the
segmentor's own ``slide_inference`` and records the crops it hands to
``encode_decode``, so the geometry is mmseg's and not a copy of it.
"""
import copy
import os.path as osp
from typing import Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmengine.registry import DefaultScope

from ..backends.segmentor import EngineSegmentor
from ..config import unwrap_dataset
from ..errors import InputError, check_choice
from .agreement import agreement, pooled_agreement, preprocess, synthetic_image

#: where the windows' images come from
SOURCES = ('dataset', 'files', 'generated')


def test_pipeline(cfg, annotations: bool = False) -> list:
    """The pipeline the config's test loop runs (without ``LoadAnnotations``
    unless ``annotations``: calibration and inference need no labels)."""
    for key in ('test_dataloader', 'val_dataloader'):
        dataset = unwrap_dataset((cfg.get(key) or {}).get('dataset') or {})
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


def _mmseg_scope():
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    return DefaultScope.overwrite_default_scope('mmseg')


def build_split(cfg, split: str, annotations: bool = False):
    """The ``split`` (train, val, test) data set of the config, with the
    test pipeline (mmseg's ``DATASETS``; labels only with ``annotations``);
    :class:`InputError` when it is missing or empty."""
    from mmseg.registry import DATASETS
    loader = cfg.get(f'{split}_dataloader')
    if not loader or not loader.get('dataset'):
        raise InputError(f'config {cfg.filename} has no {split}_dataloader '
                         'to take images from')
    dataset_cfg = copy.deepcopy(loader['dataset'])
    inner = unwrap_dataset(dataset_cfg)
    inner['pipeline'] = test_pipeline(cfg, annotations)
    # one process reads it: no serialization (which also fails, obscurely,
    # on an empty split)
    inner['serialize_data'] = False
    folder = _data_folder(inner)
    if inner.get('data_root') is not None and not osp.isdir(folder):
        raise InputError(f'the {split} split has no images: {folder} is '
                         'missing')
    try:
        with _mmseg_scope():
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


def build_test_pipeline(cfg):
    """The config's test pipeline (no annotations) as a callable on
    ``dict(img_path=...)`` or ``dict(img=array)`` (``LoadImageFromFile``
    replaced by mmseg's ``LoadImageFromNDArray`` for arrays, as
    ``MMSegInferencer`` does)."""
    from mmcv.transforms import Compose
    steps = test_pipeline(cfg)
    with _mmseg_scope():
        return Compose(steps)


def test_mode(model) -> Tuple[str, Optional[tuple]]:
    """``('slide', crop_size)`` or ``('whole', None)`` from the segmentor's
    ``test_cfg``."""
    test_cfg = getattr(model, 'test_cfg', None) or {}
    if test_cfg.get('mode', 'whole') == 'slide':
        return 'slide', tuple(test_cfg['crop_size'])
    return 'whole', None


def _recording_segmentor(model, record) -> EngineSegmentor:
    """``model`` whose ``encode_decode(x, metas)`` calls ``record(x)`` and
    returns zero logits of the right shape."""
    def compute(inputs):
        record(inputs)
        return inputs.new_zeros((inputs.shape[0], model.out_channels)
                                + tuple(inputs.shape[2:]))
    return EngineSegmentor(model, compute)


def model_windows(model, inputs: torch.Tensor) -> List[torch.Tensor]:
    """The inputs ``model`` computes ``encode_decode`` on for the
    preprocessed image(s) ``inputs`` (NxCxHxW): the crops of mmseg's own
    ``slide_inference`` (recorded, see the module docstring), or the
    image itself for whole-image inference."""
    if test_mode(model)[0] != 'slide':
        return [inputs]
    crops = []
    metas = [dict(img_shape=tuple(inputs.shape[2:]),
                  ori_shape=tuple(inputs.shape[2:]),
                  pad_shape=tuple(inputs.shape[2:]))] * inputs.shape[0]
    with torch.no_grad():
        _recording_segmentor(model, crops.append).slide_inference(
            inputs, [dict(m) for m in metas])
    return crops


class ImageWindows:
    """The model inputs of some images: each image preprocessed (test
    pipeline, data preprocessor) and cut into the windows the model sees
    (:func:`model_windows`), resized to ``shape`` where they differ (an
    image smaller than the crop, or an explicit ``shape``; counted in
    :attr:`resized`). Lazy and re-iterable (images are decoded when
    iterated: a calibration set of 713x713 windows does not fit in memory),
    so NNCF can make several passes.

    Build one with :meth:`from_dataset`, :meth:`from_files` or
    :meth:`generated`. ``batch_size`` > 1 expands every window to a batch
    (the benchmark's batched rows).
    """

    def __init__(self, model, source: str, items: Sequence,
                 dataset=None, pipeline=None,
                 shape: Optional[Tuple[int, int]] = None,
                 batch_size: int = 1, description: str = ''):
        check_choice('image source', source, SOURCES)
        self.model = model
        self.source = source
        self.items = list(items)
        self.dataset = dataset
        self.pipeline = pipeline
        self.shape = tuple(shape) if shape else None
        self.batch_size = batch_size
        self.description = description or source
        self.counts = None  # windows per image, known after one pass
        self.resized = set()  # (image, window) resized to ``shape``

    # the three sources

    @classmethod
    def from_dataset(cls, model, dataset, indices: Sequence[int],
                     shape=None, description: str = ''):
        return cls(model, 'dataset', indices, dataset=dataset, shape=shape,
                   description=description)

    @classmethod
    def from_files(cls, model, cfg, files: Sequence[str], shape=None,
                   batch_size: int = 1):
        """Image files through the config's test pipeline."""
        return cls(model, 'files', files, pipeline=build_test_pipeline(cfg),
                   shape=shape, batch_size=batch_size, description='files')

    @classmethod
    def generated(cls, model, seeds: Sequence[int], shape,
                  batch_size: int = 1):
        """Generated street-like images of ``shape`` (for speed only: an
        agreement on them says nothing about real images)."""
        return cls(model, 'generated', seeds, shape=shape,
                   batch_size=batch_size, description='generated')

    @property
    def is_generated(self) -> bool:
        return self.source == 'generated'

    def image(self, item) -> torch.Tensor:
        """One image as the model's data preprocessor makes it
        (1x3xHxW float, on the model's device)."""
        if self.source == 'generated':
            # on the model's device, as the data preprocessor puts images
            # from files
            return preprocess(self.model, synthetic_image(*self.shape,
                                                          seed=item),
                              device=None)
        if self.source == 'dataset':
            sample = self.dataset[item]
        else:
            if not osp.isfile(item):
                raise FileNotFoundError(f'image not found: {item}')
            try:
                sample = self.pipeline(dict(img_path=item))
            except (OSError, ValueError, TypeError, AttributeError,
                    AssertionError):  # mmcv's loader asserts a decoded image
                sample = None
            if sample is None:
                raise InputError(f'not a readable image: {item}')
        data = self.model.data_preprocessor(
            dict(inputs=[sample['inputs']],
                 data_samples=[sample['data_samples']]), False)
        return data['inputs'].float()

    def first_shape(self) -> Tuple[int, int]:
        """The size of the first window (a static IR's default input
        shape)."""
        mode, crop = test_mode(self.model)
        if mode == 'slide':
            return crop
        return tuple(self.image(self.items[0]).shape[-2:])

    def windows_of(self, item) -> Iterator[torch.Tensor]:
        x = self.image(item)
        for k, window in enumerate(model_windows(self.model, x)):
            if self.shape and tuple(window.shape[-2:]) != self.shape:
                self.resized.add((item, k))
                window = F.interpolate(window, size=self.shape,
                                       mode='bilinear', align_corners=False)
            if self.batch_size > 1:
                window = window.expand(self.batch_size, -1, -1, -1)
            yield window.contiguous()

    def __iter__(self) -> Iterator[torch.Tensor]:
        counts = []
        for item in self.items:
            n = 0
            for window in self.windows_of(item):
                n += 1
                yield window
            counts.append(n)
        self.counts = counts

    def count(self) -> int:
        """How many windows (one pass over the images when not known)."""
        if self.counts is None:
            if test_mode(self.model)[0] == 'whole':
                self.counts = [1] * len(self.items)
            else:
                for _ in self:
                    pass
        return sum(self.counts)

    def __len__(self) -> int:
        return self.count()

    def first(self) -> torch.Tensor:
        """The first window (resize not counted)."""
        window = next(self.windows_of(self.items[0]))
        self.resized.discard((self.items[0], 0))
        return window


def module_device(fn) -> Optional[torch.device]:
    """The device of a module's weights (``None`` for a module without
    any, or a plain function)."""
    if isinstance(fn, torch.nn.Module):
        param = next(fn.parameters(), None)
        if param is not None:
            return param.device
    return None


def windows_agreement(windows: ImageWindows, reference, run,
                      progress: bool = True) -> dict:
    """``run``'s agreement with ``reference`` (both ``x -> logits``) pooled
    over every window of ``windows`` (:func:`.verify.pooled_agreement`),
    with a progress bar on stderr. The windows go to ``reference``'s device
    (a module's weights'; the windows' model may be elsewhere), and to
    ``run`` as they are: each runner takes its inputs where it runs."""
    import sys

    from mmengine.utils import ProgressBar
    device = module_device(reference)
    per_window = []
    bar = ProgressBar(len(windows.items), file=sys.stderr) if progress \
        else None
    for item in windows.items:
        for x in windows.windows_of(item):
            if device is not None:
                x = x.to(device)
            with torch.no_grad():
                expected = reference(x)
            per_window.append(agreement(expected, run(x)))
        if bar is not None:
            bar.update()
    if bar is not None:
        sys.stderr.write('\n')
    return pooled_agreement(per_window)
