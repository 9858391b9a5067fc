"""Checks that a segmentation data set loads correctly in mmseg.

mmseg does not look at what it reads: a label folder with missing files only
fails when a worker reaches them, wrong label values or a 16-bit image train
silently on garbage. These checks pair the images and labels as mmseg does,
read every pair as its loaders do (:mod:`.file_checks`, in parallel) and
name the offending files and values.
"""
import os
import os.path as osp
import sys
from collections import Counter
from dataclasses import dataclass
from functools import partial
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from mmengine.utils import scandir, track_parallel_progress, track_progress

from ..errors import DatasetError, shorten_list
from .file_checks import PairOptions, PairResult, check_pair
from .layout import CLASSES, IGNORE, IMG_SUFFIX, SEG_MAP_SUFFIX


# How many offending files (or values) a message shows before a count.
SHOW = 5

# Findings (the pairing's and the kinds :mod:`.file_checks` reports) that
# make the check fail, in the order of the message, with the headline of
# each. ``{...}`` fields come from the check's options.
ERRORS = {
    'no_label': 'images without a label file',
    'no_image': 'label files without an image',
    'unreadable': 'unreadable or corrupt files',
    'image_format': 'images that mmseg does not load correctly',
    'label_format': 'label files that mmseg does not load correctly '
                    '(labels must be single-channel class-index maps)',
    'exif_rotation': 'images with an EXIF rotation (cv2 applies it when '
                     'loading the image, Pillow does not when loading the '
                     'label, so they would not align)',
    'size_mismatch': 'label files whose size differs from their image',
    'label_values': 'label files with values outside {valid}',
    'too_small': 'images smaller than the crop size {crop} (HxW)',
}
WARNINGS = {
    'grayscale': 'grayscale images (mmseg loads them as 3 equal channels)',
    'alpha': 'images with an alpha channel (mmseg drops it)',
    'image16': '16-bit images (mmseg keeps the high byte of each value)',
    'wide_label': '16/32-bit label files (mmseg reads them modulo 256'
                  '{wide_note})',
}


@dataclass
class DatasetReport:
    """The outcome of a check that passed."""
    img_dir: str
    ann_dir: str
    num_images: int
    quick: bool
    image_sizes: Dict[str, int]
    label_pixels: Dict[int, int]
    warnings: List[str]

    def format(self, class_names: Optional[Sequence[str]] = None) -> str:
        """A readable summary; label values named after ``class_names``."""
        names = dict(enumerate(class_names or []))
        lines = [f'{self.num_images} image/label pairs in {self.img_dir} and '
                 f'{self.ann_dir}' + (' (quick: headers only)'
                                      if self.quick else '')]
        sizes = ', '.join(f'{size} x{n}'
                          for size, n in sorted(self.image_sizes.items()))
        lines.append(f'image sizes (HxW): {sizes}')
        if self.label_pixels:
            total = sum(self.label_pixels.values())
            lines.append('label values (% of pixels): ' + ', '.join(
                f'{v}{" " + names[v] if v in names else ""}: '
                f'{100 * n / total:.2f}'
                for v, n in sorted(self.label_pixels.items())))
        lines += [f'warning: {w}' for w in self.warnings]
        return '\n'.join(lines)


def _show(items: Sequence, limit: int = SHOW) -> str:
    return shorten_list(items, limit)


# ------------------------------------------------------------- data set
def _resolve_dirs(data_root, img_dir, ann_dir) -> Tuple[str, str]:
    if data_root and not osp.isdir(data_root):
        raise DatasetError(f'data root {data_root} does not exist')
    base = data_root or ''
    img_root, ann_root = osp.join(base, img_dir), osp.join(base, ann_dir)
    missing = [f'{what} folder {path}' for what, path in
               (('image', img_root), ('label', ann_root))
               if not osp.isdir(path)]
    if missing:
        hint = ''
        if data_root:
            entries = sorted(os.listdir(data_root))
            hint = f'; {data_root} holds: {_show(entries) or "nothing"}'
        raise DatasetError(' and '.join(missing) + ' not found' + hint)
    return img_root, ann_root


def _names(folder: str, suffix: str, what: str) -> List[str]:
    """Sample names (relative paths without suffix) of a folder's files."""
    names = sorted(p[:-len(suffix)]
                   for p in scandir(folder, suffix, recursive=True))
    if not names:
        others = sorted(scandir(folder, recursive=True))
        hint = (f'; it holds {len(others)} other files, e.g. '
                f'{_show(others, 3)}' if others else '; it is empty')
        raise DatasetError(f'no {what} ending with {suffix!r} under '
                           f'{folder}{hint}')
    return names


def _pair(img_root, ann_root, img_suffix, seg_map_suffix):
    """The pairs mmseg would load, and the unpaired files as findings."""
    images = _names(img_root, img_suffix, 'images')
    labels = _names(ann_root, seg_map_suffix, 'label files')
    image_set, label_set = set(images), set(labels)
    findings = [('no_label', osp.join(img_root, n + img_suffix))
                for n in images if n not in label_set]
    findings += [('no_image', osp.join(ann_root, n + seg_map_suffix))
                 for n in labels if n not in image_set]
    tasks = [(osp.join(img_root, n + img_suffix),
              osp.join(ann_root, n + seg_map_suffix))
             for n in images if n in label_set]
    return tasks, findings


def _summarise(findings, kinds, context) -> List[str]:
    """Per kind of finding: its headline and count, then the first few
    offending files, one an indented line."""
    by_kind: Dict[str, list] = {}
    for kind, text in findings:
        by_kind.setdefault(kind, []).append(text)
    blocks = []
    for kind, headline in kinds.items():
        texts = by_kind.get(kind)
        if not texts:
            continue
        lines = [f'{len(texts)} {headline.format(**context)}:']
        lines.append('    ' + shorten_list(texts, SHOW, sep='\n    '))
        blocks.append('\n'.join(lines))
    return blocks


def _as_hw(crop_size) -> Optional[Tuple[int, int]]:
    if crop_size is None:
        return None
    if isinstance(crop_size, int):
        return crop_size, crop_size
    crop_h, crop_w = crop_size
    return int(crop_h), int(crop_w)


def _totals(results: List[PairResult]):
    """Image size counts and the label histogram of all pairs."""
    sizes = Counter(r.size for r in results if r.size is not None)
    label_pixels = np.zeros(256, np.int64)
    for result in results:
        if result.label_pixels is not None:
            label_pixels += result.label_pixels
    return dict(sizes), label_pixels


def usable_cpus(limit: Optional[int] = None) -> int:
    """The CPUs this process may use: its affinity mask (which taskset,
    cpusets/cgroups and Slurm's task binding restrict; ``os.cpu_count()``
    counts the whole machine), at most Slurm's ``--cpus-per-task``
    (``SLURM_CPUS_PER_TASK``, set also where tasks are not bound) and at
    most ``limit``; at least 1."""
    cpus = len(os.sched_getaffinity(0))
    slurm = os.environ.get('SLURM_CPUS_PER_TASK')
    if slurm:
        cpus = min(cpus, int(slurm))
    if limit is not None:
        cpus = min(cpus, limit)
    return max(1, cpus)


def default_nproc() -> int:
    """Decoding processes of a data-set check: the CPUs this process may
    use, at most 8. One process per job checks (rank 0 of a launch, see
    :func:`repvgg_seg.runs.check_data`), so it takes all of them."""
    return usable_cpus(8)


def track_tasks(func, tasks: list, nproc: int = 1) -> list:
    """``[func(t) for t in tasks]`` with a progress bar (on stderr), in
    ``nproc`` processes when above 1, at most the CPUs this process may
    use (:func:`usable_cpus`)."""
    if not tasks:
        return []
    nproc = usable_cpus(nproc)
    # stderr, like tqdm: stdout stays for results (JSON summaries)
    if nproc > 1:
        return track_parallel_progress(func, tasks, nproc, file=sys.stderr)
    return track_progress(func, tasks, file=sys.stderr)


def check_segmentation_dataset(
        data_root: Optional[str],
        img_dir: str,
        ann_dir: str,
        img_suffix: str = IMG_SUFFIX,
        seg_map_suffix: str = SEG_MAP_SUFFIX,
        num_classes: int = len(CLASSES),
        ignore_index: int = IGNORE,
        crop_size: Union[None, int, Sequence[int]] = None,
        quick: bool = False,
        reduce_zero_label: bool = False,
        nproc: int = 1) -> DatasetReport:
    """Checks that mmseg would load a data set correctly.

    Args:
        data_root: the folder ``img_dir`` and ``ann_dir`` are relative to
            (``None`` or ``''``: they are paths themselves).
        img_dir, ann_dir: the image and label folders (``data_prefix``'s
            ``img_path`` and ``seg_map_path``), scanned recursively.
        img_suffix, seg_map_suffix: the file name endings that pair them.
        num_classes, ignore_index: label values must be in
            ``0..num_classes-1`` or ``ignore_index``.
        crop_size: (h, w) or an int: images must be at least this large.
        quick: check pairing and headers (sizes, modes, bit depths) only,
            without decoding pixels: no value, corruption or 16-bit range
            checks.
        reduce_zero_label: the labels are shifted by one on loading (0 is
            ignored), so raw values ``0..num_classes`` are valid.
        nproc: processes that decode files (full check only).

    Returns:
        A :class:`DatasetReport` (counts, sizes, label histogram, warnings).

    Raises:
        DatasetError: naming each problem and the first offending files and
            values.
    """
    img_root, ann_root = _resolve_dirs(data_root, img_dir, ann_dir)
    tasks, findings = _pair(img_root, ann_root, img_suffix, seg_map_suffix)
    valid = list(range(num_classes + int(reduce_zero_label)))
    valid = tuple(sorted(set(valid) | {ignore_index}))
    options = PairOptions(valid, _as_hw(crop_size), quick)
    check = partial(check_pair, options=options)
    results = track_tasks(check, tasks, nproc if not quick else 1)
    sizes, label_pixels = _totals(results)
    findings += [f for result in results for f in result.findings]

    crop = options.crop_size
    context = dict(
        valid=f'0..{num_classes - 1 + int(reduce_zero_label)} and '
              f'{ignore_index} (ignore_index)',
        crop=f'{crop[0]}x{crop[1]}' if crop else '',
        wide_note='; values not checked in quick mode' if quick
        else '; their values are in range')
    errors = _summarise(findings, ERRORS, context)
    if errors:
        raise DatasetError(
            f'data set check failed for {img_root} and {ann_root}:\n'
            + '\n'.join(f'- {line}' for line in errors))
    return DatasetReport(
        img_dir=img_root, ann_dir=ann_root, num_images=len(tasks),
        quick=quick, image_sizes=sizes,
        label_pixels={v: int(n) for v, n in enumerate(label_pixels) if n},
        warnings=_summarise(findings, WARNINGS, context))
