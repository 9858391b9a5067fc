"""What ``tools/infer.py`` segments: an image, a folder of images
(recursive), a text file of image paths, or a video.

Each image becomes an :class:`Item` with the name its outputs get
(``name``: the path relative to the input folder or list, without the
suffix), so the outputs mirror the input's folder structure.
"""
import os.path as osp
from dataclasses import dataclass
from typing import List, Sequence

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


def folder_items(folder: str) -> List[Item]:
    """Every image under ``folder`` (:func:`images_under`: recursive,
    sorted), named by its path relative to it."""
    return [Item(path, _stem(osp.relpath(path, folder)))
            for path in images_under(folder)]


def list_items(list_file: str) -> List[Item]:
    """The images a text file names (one path a line, relative to the
    file's folder unless absolute; blank lines and ``#`` comments
    skipped), named by their path relative to that folder (or their file
    name when outside it)."""
    base = osp.dirname(osp.abspath(list_file))
    with open(list_file, encoding='utf-8') as f:
        lines = [line.strip() for line in f]
    paths = [line for line in lines if line and not line.startswith('#')]
    if not paths:
        raise InputError(f'{list_file} names no images')
    items = []
    for path in paths:
        full = path if osp.isabs(path) else osp.join(base, path)
        rel = osp.relpath(full, base)
        name = _stem(osp.basename(full) if rel.startswith('..') else rel)
        items.append(Item(full, name))
    names = [item.name for item in items]
    if len(set(names)) != len(names):
        raise InputError(f'{list_file} names two images whose outputs would '
                         'have the same name; list images under one folder')
    return items


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


def shard(items: Sequence[Item], rank: int, world_size: int) -> List[Item]:
    """The items of one rank of ``world_size``: every ``world_size``-th,
    so each item is done by exactly one rank."""
    return list(items)[rank::world_size]
