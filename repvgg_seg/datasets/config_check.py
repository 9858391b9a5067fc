"""Run :func:`check_segmentation_dataset` on the data sets a config names.

Used by ``tools/check_dataset.py`` and, before any training or testing, by
``tools/train.py`` / ``tools/test.py`` (``--data-check full|quick|off``):
mmseg would otherwise start a multi-day run on a data set with missing
labels or wrong label values and fail hours later deep inside a worker or
the loss (or not at all). A passed full check is remembered in the work dir
under a fingerprint of the files (names, sizes, modification times) and of
the check's options, so resuming does not decode the data set again.
"""
import hashlib
import inspect
import json
import os
import os.path as osp
from typing import Iterator, List, Optional, Sequence, Tuple

from mmengine.logging import print_log

from ..io.files import write_json
from .checks import (DatasetError, DatasetReport, check_segmentation_dataset,
                     default_nproc)

# Transforms that change the image size before a RandomCrop: after them the
# crop no longer bounds the size of the files on disk.
_RESIZES = ('Resize', 'RandomResize', 'RandomChoiceResize', 'RandomRescale',
            'ResizeShortestEdge', 'ResizeToMultiple')
CACHE_FILE = 'data_check.json'


def leaf_datasets(dataset_cfg) -> Iterator[dict]:
    """The dataset configs inside wrappers (RepeatDataset, ConcatDataset)."""
    if 'datasets' in dataset_cfg:
        for child in dataset_cfg['datasets']:
            yield from leaf_datasets(child)
    elif 'dataset' in dataset_cfg:
        yield from leaf_datasets(dataset_cfg['dataset'])
    else:
        yield dataset_cfg


def crop_size_of(pipeline) -> Optional[Sequence[int]]:
    """The RandomCrop size when it sees the images as stored (no resize
    before it); ``None`` otherwise."""
    for transform in pipeline or []:
        kind = transform.get('type')
        if kind in _RESIZES:
            return None
        if kind == 'RandomCrop':
            return transform['crop_size']
    return None


def segmentation_dataset_class(dataset_type):
    """The mmseg dataset class of a config's ``type``; ``None`` for
    datasets that are not mmseg segmentation sets (ImageNet ...)."""
    from mmseg.datasets import BaseSegDataset
    from mmseg.registry import DATASETS
    if inspect.isclass(dataset_type):
        cls = dataset_type
    else:
        cls = DATASETS.get(dataset_type)
    if cls is None or not issubclass(cls, BaseSegDataset):
        return None
    return cls


def check_options(dataset_cfg,
                  data_root: Optional[str] = None) -> Tuple[list, dict]:
    """The class names and :func:`check_segmentation_dataset` arguments of a
    segmentation dataset config."""
    from mmseg.registry import DATASETS
    dataset_type = dataset_cfg['type']
    if segmentation_dataset_class(dataset_type) is None:
        raise DatasetError(f'{dataset_type!r} is not an mmseg segmentation '
                           'dataset type')
    # Built without reading a file (lazy_init) or a transform (no pipeline):
    # its attributes are the config's settings over the class's defaults,
    # as training will see them.
    cfg = dict(dataset_cfg, pipeline=[], lazy_init=True)
    if data_root:
        cfg['data_root'] = data_root
    dataset = DATASETS.build(cfg)
    classes = dataset.metainfo['classes']
    # data_prefix as configured: the data set has joined it to data_root
    prefix = dataset_cfg.get('data_prefix') or {}
    return list(classes), dict(
        data_root=dataset.data_root,
        img_dir=prefix.get('img_path', ''),
        ann_dir=prefix.get('seg_map_path', ''),
        img_suffix=dataset.img_suffix,
        seg_map_suffix=dataset.seg_map_suffix,
        num_classes=len(classes),
        ignore_index=dataset.ignore_index,
        reduce_zero_label=dataset.reduce_zero_label,
        crop_size=crop_size_of(dataset_cfg.get('pipeline')))


def config_datasets(cfg, splits: Sequence[str],
                    data_root: Optional[str] = None
                    ) -> List[Tuple[str, list, dict]]:
    """``(split, class names, check options)`` for every segmentation data
    set of ``{split}_dataloader``; other dataset types are skipped."""
    found = []
    for split in splits:
        loader = cfg.get(f'{split}_dataloader')
        if loader is None:
            raise DatasetError(f'the config has no {split}_dataloader')
        for dataset_cfg in leaf_datasets(loader['dataset']):
            if segmentation_dataset_class(dataset_cfg.get('type')) is None:
                continue
            classes, options = check_options(dataset_cfg, data_root)
            found.append((split, classes, options))
    return found


def fingerprint(options: dict, quick: bool) -> str:
    """A hash of the check's options and of every file's name, size and
    modification time under the image and label folders."""
    digest = hashlib.sha1(json.dumps([sorted(
        (k, str(v)) for k, v in options.items()), quick]).encode())
    root = options['data_root'] or ''
    for folder in (options['img_dir'], options['ann_dir']):
        for dirpath, dirnames, filenames in os.walk(osp.join(root, folder)):
            dirnames.sort()
            for name in sorted(filenames):
                stat = os.stat(osp.join(dirpath, name))
                digest.update(f'{dirpath}/{name}:{stat.st_size}:'
                              f'{stat.st_mtime_ns}\n'.encode())
    return digest.hexdigest()


def _read_cache(cache_dir: Optional[str]) -> dict:
    path = osp.join(cache_dir, CACHE_FILE) if cache_dir else None
    if not path or not osp.isfile(path):
        return {}
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}  # an unreadable cache only costs a new check


def missing_data_hint(cfg, split: str, message: str) -> str:
    """Where a missing Cityscapes comes from, for a missing-folder error."""
    from mmseg.datasets import CityscapesDataset
    dataset_type = cfg[f'{split}_dataloader']['dataset'].get('type')
    cls = segmentation_dataset_class(dataset_type)
    missing = 'does not exist' in message or 'not found' in message
    if not (missing and cls is not None
            and issubclass(cls, CityscapesDataset)):
        return ''
    return ('\n(Cityscapes: unpack leftImg8bit_trainvaltest.zip and '
            'gtFine_trainvaltest.zip from https://www.cityscapes-dataset.com '
            'into the data root and run tools/prepare_cityscapes.py on it; '
            'or point --cfg-options '
            f'{split}_dataloader.dataset.data_root=... elsewhere)')


def check_config_datasets(cfg,
                          splits: Sequence[str] = ('train', 'val'),
                          quick: bool = False,
                          nproc: Optional[int] = None,
                          data_root: Optional[str] = None,
                          cache_dir: Optional[str] = None
                          ) -> List[Tuple[str, list, DatasetReport]]:
    """Check every segmentation data set of the config's ``splits``.

    Args:
        quick: pairing and file headers only (no label values).
        nproc: decoding processes (default: :func:`default_nproc`), at
            most the CPUs this process may use.
        cache_dir: remember passed checks here (``data_check.json``) and
            skip a data set whose fingerprint has passed before.

    Returns:
        ``(split, class names, report)`` per data set checked now (cached
        passes are logged, not returned).

    Raises:
        DatasetError: naming the split, the folders and every problem.
    """
    cache = _read_cache(cache_dir)
    passed = set(cache.get('passed', []))
    reports = []
    for split, classes, options in config_datasets(cfg, splits, data_root):
        where = f'{options["data_root"] or ""} {options["img_dir"]} / ' \
                f'{options["ann_dir"]}'
        key = fingerprint(options, quick)
        if key in passed:
            print_log(f'data check ({split}): {where} passed before, '
                      f'unchanged ({CACHE_FILE})', logger='current')
            continue
        print_log(f'data check ({split}, {"quick" if quick else "full"}): '
                  f'{where}', logger='current')
        try:
            report = check_segmentation_dataset(
                **options, quick=quick,
                nproc=nproc if nproc is not None else default_nproc())
        except DatasetError as exc:
            hint = missing_data_hint(cfg, split, str(exc))
            raise DatasetError(f'{split} data: {exc}{hint}') from None
        for line in report.format(classes).splitlines():
            print_log(line, logger='current',
                      level=30 if line.startswith('warning') else 20)
        reports.append((split, classes, report))
        passed.add(key)
        if cache_dir:
            write_json({'passed': sorted(passed)},
                       osp.join(cache_dir, CACHE_FILE))
    return reports
