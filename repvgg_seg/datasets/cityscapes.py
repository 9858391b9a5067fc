"""Turns the official Cityscapes download into what mmseg reads.

mmseg's ``CityscapesDataset`` reads ``gtFine/*/*_gtFine_labelTrainIds.png``
(19 train ids, 255 = ignore), which the download does not contain: it has
``*_gtFine_labelIds.png`` (the 34 label ids) and ``*_gtFine_polygons.json``.
The label ids are mapped through a lookup table built from cityscapesscripts'
label table (fast); a sample with polygons only is drawn with
cityscapesscripts' ``createLabelImage(..., 'trainIds')``.

Outputs are written atomically and skipped while newer than their source, so
an interrupted run can be resumed and a finished one repeated for free.
"""
import os.path as osp
from functools import partial
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np
from mmengine.logging import print_log
from mmengine.utils import scandir

from ..errors import DatasetError, shorten_list
from ..io.files import atomic_write_bytes
from .checks import track_tasks
from .layout import IGNORE, IMG_SUFFIX, SEG_MAP_SUFFIX

LABEL_IDS_SUFFIX = '_gtFine_labelIds.png'
POLYGONS_SUFFIX = '_gtFine_polygons.json'
# The splits of gtFine (train_extra has coarse annotations only).
SPLITS = ('train', 'val', 'test')
SHOW = 5


def label_id_to_train_id_lut() -> np.ndarray:
    """256-entry uint8 table: label id -> train id (255 for ignored ids)."""
    from cityscapesscripts.helpers.labels import labels
    lut = np.full(256, IGNORE, np.uint8)
    for label in labels:
        if 0 <= label.id < 256 and 0 <= label.trainId < IGNORE:
            lut[label.id] = label.trainId
    return lut


def _write_png_atomic(path: str, array: np.ndarray) -> None:
    """Encodes a PNG and writes it atomically, so that an interrupted run
    leaves no truncated file."""
    ok, data = cv2.imencode('.png', array)
    if not ok:
        raise OSError(f'could not encode {path}')
    atomic_write_bytes(data.tobytes(), path)


def train_ids_from_label_ids(path: str, lut: np.ndarray) -> np.ndarray:
    label_ids = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if label_ids is None:
        raise DatasetError(f'cannot read {path}')
    if label_ids.ndim != 2 or label_ids.dtype != np.uint8:
        raise DatasetError(f'{path} is not a single-channel 8-bit label id '
                           f'map (shape {label_ids.shape}, {label_ids.dtype})')
    return lut[label_ids]


def train_ids_from_polygons(path: str) -> np.ndarray:
    from cityscapesscripts.helpers.annotation import Annotation
    from cityscapesscripts.preparation.json2labelImg import createLabelImage
    annotation = Annotation()
    annotation.fromJsonFile(path)
    try:
        image = createLabelImage(annotation, 'trainIds')
    except SystemExit:  # cityscapesscripts exits on an unknown label name
        raise DatasetError(f'{path} has a label that cityscapesscripts '
                           'does not know') from None
    return np.asarray(image, np.uint8)


def _convert(task, lut: np.ndarray) -> str:
    """Writes one ``_labelTrainIds.png``; returns what it did."""
    source, target = task
    if osp.exists(target) and osp.getmtime(target) >= osp.getmtime(source):
        return 'skipped'
    if source.endswith(LABEL_IDS_SUFFIX):
        train_ids = train_ids_from_label_ids(source, lut)
        done = 'converted'
    else:
        train_ids = train_ids_from_polygons(source)
        done = 'drawn'
    _write_png_atomic(target, train_ids)
    return done


def _stems(folder: str, suffix: str) -> set:
    if not osp.isdir(folder):
        return set()
    return {p[:-len(suffix)] for p in scandir(folder, suffix, recursive=True)}


def _show(names: Sequence[str]) -> str:
    return shorten_list(sorted(names), SHOW)


def _split_sources(root: str, split: str) -> Dict[str, str]:
    """``{sample name: annotation source}`` of a split, after checking that
    every image has an annotation and every annotation an image."""
    img_dir = osp.join(root, 'leftImg8bit', split)
    ann_dir = osp.join(root, 'gtFine', split)
    images = _stems(img_dir, IMG_SUFFIX)
    label_ids = _stems(ann_dir, LABEL_IDS_SUFFIX)
    polygons = _stems(ann_dir, POLYGONS_SUFFIX)
    annotations = label_ids | polygons
    if images and not annotations:
        raise DatasetError(
            f'split {split!r} has {len(images)} images in {img_dir} but no '
            f'annotations (*{LABEL_IDS_SUFFIX} or *{POLYGONS_SUFFIX}) in '
            f'{ann_dir}: download and extract gtFine_trainvaltest.zip')
    if annotations and not images:
        raise DatasetError(
            f'split {split!r} has {len(annotations)} annotations in '
            f'{ann_dir} but no images (*{IMG_SUFFIX}) in {img_dir}: '
            'download and extract leftImg8bit_trainvaltest.zip')
    if images != annotations:
        problems = []
        if images - annotations:
            problems.append(f'{len(images - annotations)} images without '
                            f'annotation in {ann_dir}: '
                            f'{_show(images - annotations)}')
        if annotations - images:
            problems.append(f'{len(annotations - images)} annotations '
                            f'without image in {img_dir}: '
                            f'{_show(annotations - images)}')
        raise DatasetError(f'split {split!r} is incomplete: '
                           + '; '.join(problems))
    return {name: osp.join(ann_dir, name + (
        LABEL_IDS_SUFFIX if name in label_ids else POLYGONS_SUFFIX))
        for name in sorted(annotations)}


def _check_root(root: str) -> List[str]:
    """The splits present; raises on a root that is not a download."""
    if not osp.isdir(root):
        raise DatasetError(f'Cityscapes root {root} does not exist')
    missing = [d for d in ('leftImg8bit', 'gtFine')
               if not osp.isdir(osp.join(root, d))]
    if missing:
        raise DatasetError(
            f'Cityscapes root {root} has no ' + ' and no '.join(
                f'{d}/' for d in missing) + ' folder (it should hold the '
            'extracted leftImg8bit_trainvaltest.zip and '
            'gtFine_trainvaltest.zip)')
    splits = [s for s in SPLITS
              if osp.isdir(osp.join(root, 'leftImg8bit', s))
              or osp.isdir(osp.join(root, 'gtFine', s))]
    if not splits:
        raise DatasetError(f'Cityscapes root {root} has none of the splits '
                           f'{", ".join(SPLITS)} in leftImg8bit/ or gtFine/')
    return splits


def write_split_list(root: str, split: str, names: Sequence[str]) -> str:
    """``{root}/{split}.txt``: one ``city/city_seq_frame`` a line, as
    mmseg's own converter writes (a dataset's ``ann_file``)."""
    path = osp.join(root, f'{split}.txt')
    text = ''.join(f'{name}\n' for name in names)
    if osp.isfile(path):
        with open(path) as f:
            if f.read() == text:
                return path  # unchanged: keep its mtime
    atomic_write_bytes(text.encode(), path)
    return path


def prepare_cityscapes(root: str, nproc: int = 1,
                       splits: Optional[Sequence[str]] = None,
                       split_lists: bool = True) -> dict:
    """Writes ``*_gtFine_labelTrainIds.png`` next to the annotations.

    Args:
        root: the folder holding ``leftImg8bit/`` and ``gtFine/``.
        nproc: worker processes (at most the CPUs this process may use).
        splits: the splits to prepare (default: those present of train, val
            and test).
        split_lists: also write ``{split}.txt`` into ``root``.

    Returns:
        ``{'splits': {split: {'samples', 'converted', 'drawn',
        'skipped'}}, 'split_lists': [paths]}``.

    Raises:
        DatasetError: naming what is missing (the root, ``leftImg8bit/`` or
            ``gtFine/``, a split's images or annotations, unpaired files).
    """
    present = _check_root(root)
    splits = present if splits is None else list(splits)
    # Check every split before writing anything.
    sources = {split: _split_sources(root, split) for split in splits}
    lut = label_id_to_train_id_lut()
    summary = dict(splits={}, split_lists=[])
    for split, split_sources in sources.items():
        tasks = [(source, osp.join(root, 'gtFine', split,
                                   name + SEG_MAP_SUFFIX))
                 for name, source in split_sources.items()]
        convert = partial(_convert, lut=lut)
        done = track_tasks(convert, tasks, nproc)
        counts = {k: done.count(k) for k in ('converted', 'drawn', 'skipped')}
        summary['splits'][split] = dict(samples=len(tasks), **counts)
        if split_lists:
            summary['split_lists'].append(
                write_split_list(root, split, list(split_sources)))
        done_text = ', '.join(f'{n} {k}' for k, n in counts.items())
        print_log(f'{split}: {done_text}', logger='current')
    return summary
