"""The ImageNet layout the classification configs read: checked, and a
flat val/ folder completed with its label file."""
import os
import os.path as osp

from ..errors import shorten_list
from ..io.files import atomic_write_bytes

IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif')


def _images(folder):
    return [f for f in os.listdir(folder)
            if f.lower().endswith(IMG_EXTENSIONS)
            and osp.isfile(osp.join(folder, f))]


def _class_folders(folder):
    return sorted(d for d in os.listdir(folder)
                  if osp.isdir(osp.join(folder, d)))


def _read_ann(path, num_classes, problems):
    entries = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or not parts[1].isdigit():
                problems.append(f'{path}:{lineno}: expected "<image name> '
                                f'<class index>", got {line.strip()!r}')
                return entries
            if int(parts[1]) >= num_classes:
                problems.append(f'{path}:{lineno}: class index {parts[1]} '
                                f'out of range (train/ has {num_classes} '
                                'classes)')
            entries.append(parts[0])
    return entries


def check_imagenet(root, val_ann=None, num_classes=1000):
    """Return ``(problems, summary)``: lists of lines to print."""
    problems, summary = [], []
    train, val = osp.join(root, 'train'), osp.join(root, 'val')
    if not osp.isdir(train):
        return [f'{train} is missing (one sub-folder per class expected)'], []
    classes = _class_folders(train)
    if not classes:
        problems.append(f'{train} has no class folders (images must be in '
                        'train/<class>/)')
    if classes and len(classes) != num_classes:
        problems.append(f'{train} has {len(classes)} class folders, '
                        f'expected {num_classes}')
    counts = {c: len(_images(osp.join(train, c))) for c in classes}
    empty = [c for c, n in counts.items() if n == 0]
    if empty:
        problems.append(f'{len(empty)} empty class folders in {train}: '
                        f'{shorten_list(empty)}')
    summary.append(f'train: {len(classes)} classes, '
                   f'{sum(counts.values())} images')

    if not osp.isdir(val):
        problems.append(f'{val} is missing')
        return problems, summary
    val_classes = _class_folders(val)
    meta_val = osp.join(root, 'meta', 'val.txt')
    if val_classes:
        if val_ann:
            problems.append(f'{val} is arranged by class already; '
                            '--val-ann is not needed')
        if val_classes != classes:
            missing = sorted(set(classes) - set(val_classes))
            extra = sorted(set(val_classes) - set(classes))
            problems.append(f'{val} class folders differ from train/: '
                            f'missing {shorten_list(missing) or "none"}, '
                            f'extra {shorten_list(extra) or "none"}')
        n = sum(len(_images(osp.join(val, c))) for c in val_classes)
        summary.append(f'val: by class folder, {n} images')
        return problems, summary

    ann = val_ann or meta_val
    if not osp.isfile(ann):
        problems.append(f'{val} has no class folders and {meta_val} is '
                        'missing: give the labels with --val-ann FILE')
        return problems, summary
    entries = _read_ann(ann, len(classes), problems)
    present = set(_images(val))
    absent = [e for e in entries if e not in present]
    if absent:
        problems.append(f'{len(absent)} images of {ann} are not in {val}: '
                        f'{shorten_list(absent)}')
    unlabelled = len(present - set(entries))
    if unlabelled:
        problems.append(f'{unlabelled} images in {val} have no label in '
                        f'{ann}')
    summary.append(f'val: flat, {len(entries)} labelled images ({ann})')
    if val_ann and not problems:
        with open(val_ann, 'rb') as f:
            atomic_write_bytes(f.read(), meta_val)
        summary.append(f'installed {val_ann} as {meta_val}')
    return problems, summary
