"""A procedural mini-Cityscapes: street scenes (:mod:`.scenes`) written as
a data set.

The files are written in the real Cityscapes layout and names, with train ids
in ``*_gtFine_labelTrainIds.png``, so that mmseg's ``CityscapesDataset`` reads
them unchanged. The same parameters give byte-identical files.
"""
import json
import os
import os.path as osp
import shutil
import tempfile
from typing import Optional, Sequence

import cv2
import numpy as np
from mmengine.logging import print_log
from mmengine.utils import mkdir_or_exist

from ..errors import DatasetError, InputError
from .checks import track_tasks
from .layout import CLASSES, IGNORE, IMG_SUFFIX, SEG_MAP_SUFFIX
from .scenes import draw_street_scene

# Bump when a change of the drawing code changes the files, so that an old
# data set is recognised as made with other parameters (2: the upper
# floors of long facades get windows).
GENERATOR_VERSION = 2
MANIFEST = 'synthetic_cityscapes.json'
# The real split has disjoint cities.
SPLIT_CITIES = {
    'train': ('aachen', 'bochum', 'bremen'),
    'val': ('frankfurt', 'lindau'),
}


def sample_names(split: str, count: int) -> list:
    """Cityscapes-style names ``{city}/{city}_{seq:06d}_000019``."""
    cities = SPLIT_CITIES[split]
    names = []
    for index in range(count):
        city, seq = cities[index % len(cities)], index // len(cities)
        names.append(f'{city}/{city}_{seq:06d}_000019')
    return names


def _write_sample(task) -> np.ndarray:
    """Draws and writes one sample; returns its class pixel counts."""
    root, split, index, name, size, seed = task
    # One generator per image: a sample does not depend on the counts.
    rng = np.random.default_rng([seed, list(SPLIT_CITIES).index(split),
                                 index])
    image, label = draw_street_scene(size, rng)
    img_path = osp.join(root, 'leftImg8bit', split, name + IMG_SUFFIX)
    seg_path = osp.join(root, 'gtFine', split, name + SEG_MAP_SUFFIX)
    for path, array in ((img_path, image), (seg_path, label)):
        mkdir_or_exist(osp.dirname(path))
        if not cv2.imwrite(path, array):
            raise OSError(f'could not write {path}')
    return np.bincount(label.ravel(), minlength=256)


def _generate(root, params) -> dict:
    summary = dict(splits={})
    classes = set()
    for split in SPLIT_CITIES:
        count = params[f'num_{split}']
        tasks = [(root, split, index, name, tuple(params['size']),
                  params['seed'])
                 for index, name in enumerate(sample_names(split, count))]
        counts = track_tasks(_write_sample, tasks)
        pixels = np.sum(counts, axis=0) if counts else np.zeros(256, int)
        present = [t for t in range(len(CLASSES)) if pixels[t] > 0]
        classes.update(present)
        summary['splits'][split] = dict(
            images=count, cities=list(SPLIT_CITIES[split]),
            class_pixels={CLASSES[t]: int(pixels[t]) for t in present},
            ignore_pixels=int(pixels[IGNORE]))
    summary['classes'] = [CLASSES[t] for t in sorted(classes)]
    return summary


def _expected_files(root, params):
    for split in SPLIT_CITIES:
        for name in sample_names(split, params[f'num_{split}']):
            yield osp.join(root, 'leftImg8bit', split, name + IMG_SUFFIX)
            yield osp.join(root, 'gtFine', split, name + SEG_MAP_SUFFIX)


def _read_manifest(root) -> Optional[dict]:
    path = osp.join(root, MANIFEST)
    if not osp.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def _replace_dir(new, root):
    """Puts the finished folder ``new`` at ``root`` (renames only)."""
    old = None
    if osp.lexists(root):
        old = tempfile.mkdtemp(prefix=f'.{osp.basename(root)}.old-',
                               dir=osp.dirname(root))
        os.rename(root, osp.join(old, 'data'))
    os.rename(new, root)
    if old is not None:
        shutil.rmtree(old)


def make_synthetic_cityscapes(root: str,
                              num_train: int = 60,
                              num_val: int = 20,
                              size: Sequence[int] = (256, 512),
                              seed: int = 0,
                              overwrite: bool = False) -> dict:
    """Writes a synthetic Cityscapes-layout data set at ``root``.

    Args:
        root: the data root (it gets ``leftImg8bit/`` and ``gtFine/``).
        num_train, num_val: images of each split.
        size: (height, width) of the images.
        seed: the same seed gives byte-identical files.
        overwrite: replace a synthetic data set made with other parameters.

    Returns:
        A summary: images, cities and class pixel counts per split and the
        classes present. A data set made with the same parameters is left as
        it is and its summary returned.

    Raises:
        DatasetError: ``root`` holds a data set made with other parameters
            (and not ``overwrite``), or files that this function did not
            write.
    """
    height, width = (int(v) for v in size)
    if height < 64 or width < 64:
        raise InputError(f'size must be at least 64x64, got {height}x{width}')
    if num_train < 0 or num_val < 0 or num_train + num_val == 0:
        raise InputError('num_train and num_val must be >= 0, not both 0; '
                         f'got {num_train} and {num_val}')
    root = osp.abspath(root)
    params = dict(generator_version=GENERATOR_VERSION, num_train=num_train,
                  num_val=num_val, size=[height, width], seed=seed)

    manifest = _read_manifest(root)
    if manifest is not None:
        complete = all(osp.isfile(p) for p in _expected_files(root, params))
        if manifest['params'] == params and complete:
            print_log(f'synthetic Cityscapes at {root} is up to date',
                      logger='current')
            return manifest['summary']
        changed = {k: (manifest['params'].get(k), v)
                   for k, v in params.items()
                   if manifest['params'].get(k) != v}
        if changed and not overwrite:
            raise DatasetError(
                f'{root} holds a synthetic data set made with other '
                'parameters (' + ', '.join(
                    f'{k}: {old} there, {new} asked'
                    for k, (old, new) in changed.items()) +
                '); pass overwrite=True (--force) to replace it')
    elif osp.isdir(root) and os.listdir(root):
        raise DatasetError(
            f'{root} is not empty and holds no {MANIFEST}: it is not a '
            'synthetic data set, refusing to write into it')

    parent = osp.dirname(root)
    mkdir_or_exist(parent)
    tmp = tempfile.mkdtemp(prefix=f'.{osp.basename(root)}.tmp-', dir=parent)
    os.chmod(tmp, 0o755)  # mkdtemp's 0o700 would outlive the rename
    try:
        summary = _generate(tmp, params)
        summary['root'] = root
        with open(osp.join(tmp, MANIFEST), 'w') as f:
            json.dump(dict(params=params, summary=summary), f, indent=2)
        _replace_dir(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print_log(f'wrote synthetic Cityscapes to {root}: {num_train} train, '
              f'{num_val} val images of {height}x{width}, classes: '
              f'{", ".join(summary["classes"])}', logger='current')
    return summary
