"""What ``tools/infer.py`` segments: an image, a folder of images
(recursive), a text file of image paths, or a video; and how an image is
read (:func:`read_image`: a truncated file is an error, not a grey image).

Each image becomes an :class:`Item` with the name its outputs get
(``name``: the path relative to the input folder or list, without the
suffix), so the outputs mirror the input's folder structure. Images that
would share a name (``photo.png``, ``photo.jpg``) keep their suffix in it
(``photo.png``, ``photo.jpg``: ``vis/photo.png.jpg``), so every input
gets outputs of its own; a clash that remains is an error before any
work.
"""
import os.path as osp
from collections import Counter
from dataclasses import dataclass
from typing import List, Sequence

import numpy as np

from ..errors import InputError
from ..evaluation.images import IMAGE_SUFFIXES, images_under, is_image

#: video files by suffix (lower case)
VIDEO_SUFFIXES = ('.mp4', '.avi', '.mov', '.mkv', '.webm', '.m4v',
                  '.mpg', '.mpeg')
#: a text file of paths, one a line
LIST_SUFFIXES = ('.txt', '.lst')


@dataclass(frozen=True)
class Item:
    """One image to segment: its path and its outputs' name."""
    path: str
    name: str


def is_video(path: str) -> bool:
    return osp.splitext(path)[1].lower() in VIDEO_SUFFIXES


def _stem(rel: str) -> str:
    return osp.splitext(rel)[0]


def named_items(paths: Sequence[str], rels: Sequence[str]) -> List[Item]:
    """The images ``paths`` named by their relative paths ``rels`` without
    the suffix, or with it where two would share that name; raises
    :class:`InputError` naming two inputs whose outputs still collide."""
    stems = Counter(_stem(rel) for rel in rels)
    owners = {}
    items = []
    for path, rel in zip(paths, rels):
        name = _stem(rel) if stems[_stem(rel)] == 1 else rel
        if name in owners:
            raise InputError(f'{owners[name]} and {path} would write the same '
                             f'outputs (named {name!r}); rename one of them')
        owners[name] = path
        items.append(Item(path, name))
    return items


def folder_items(folder: str) -> List[Item]:
    """Every image under ``folder`` (:func:`images_under`: recursive,
    sorted), named by its path relative to it (:func:`named_items`)."""
    paths = images_under(folder)
    return named_items(paths, [osp.relpath(p, folder) for p in paths])


def list_items(list_file: str) -> List[Item]:
    """The images a text file names (one path a line, relative to the
    file's folder unless absolute; blank lines and ``#`` comments
    skipped), named by their path relative to that folder (or their file
    name when outside it; :func:`named_items`)."""
    base = osp.dirname(osp.abspath(list_file))
    with open(list_file, encoding='utf-8') as f:
        lines = [line.strip() for line in f]
    paths = [line for line in lines if line and not line.startswith('#')]
    if not paths:
        raise InputError(f'{list_file} names no images')
    fulls = [path if osp.isabs(path) else osp.join(base, path)
             for path in paths]
    rels = [osp.relpath(full, base) for full in fulls]
    return named_items(fulls, [osp.basename(full) if rel.startswith('..')
                               else rel for full, rel in zip(fulls, rels)])


def resolve_inputs(source: str) -> List[Item]:
    """The images of ``source`` (an image, a folder or a list file; a
    video is handled by :mod:`.job`)."""
    if osp.isdir(source):
        return folder_items(source)
    if not osp.exists(source):
        raise FileNotFoundError(f'input not found: {source}')
    suffix = osp.splitext(source)[1].lower()
    if suffix in LIST_SUFFIXES:
        return list_items(source)
    if is_image(source):
        return [Item(source, _stem(osp.basename(source)))]
    raise InputError(
        f'{source}: not an image, a folder, a list of paths (.txt) or a '
        f'video ({", ".join(IMAGE_SUFFIXES + VIDEO_SUFFIXES)})')


def truncated(data: bytes) -> bool:
    """Whether a JPEG or PNG file's bytes end before its end marker
    (decoders often return a partly grey image for those instead of an
    error)."""
    head = data[:8]
    if head.startswith(b'\xff\xd8'):
        return b'\xff\xd9' not in data[-1024:]
    if head.startswith(b'\x89PNG'):
        return b'IEND' not in data[-64:]
    return False


def decode_image(data: bytes, name: str) -> np.ndarray:
    """The image in ``data`` as mmseg's ``LoadImageFromFile`` decodes it
    (BGR, OpenCV), or :class:`InputError` saying why it cannot be used
    (``name``: the file or request it came from)."""
    import mmcv
    if not data:
        raise InputError(f'{name} is empty')
    if truncated(data):
        raise InputError(f'{name} is truncated')
    image = mmcv.imfrombytes(data)
    if image is None:
        raise InputError(f'{name} is not a readable image')
    return image


def read_image(path: str) -> np.ndarray:
    """The image file as :func:`decode_image` decodes it."""
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except OSError as exc:
        raise InputError(f'cannot read {path}: {exc.strerror or exc}') \
            from None
    return decode_image(data, path)


def shard(items: Sequence[Item], rank: int, world_size: int) -> List[Item]:
    """The items of one rank of ``world_size``: every ``world_size``-th,
    so each item is done by exactly one rank."""
    return list(items)[rank::world_size]
