"""Which files are images, and the one image lister of the project: the
images tools/infer.py segments in a folder and the ones the agreement
checks (tools/benchmark.py ``--image``) run on are found the same way."""
import os
import os.path as osp
from typing import List, Sequence

from ..errors import InputError

#: image files by suffix (lower case): what mmcv (OpenCV) decodes
IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')


class NoImagesError(InputError, FileNotFoundError):
    """A folder without images: a user's input error, and a missing file
    to the callers that caught those before there was one lister."""


def is_image(path: str) -> bool:
    """Whether ``path`` names an image file by its suffix (any case)."""
    return path.lower().endswith(IMAGE_SUFFIXES)


def images_under(folder: str) -> List[str]:
    """Every image file under ``folder`` (recursive), sorted by path so the
    set and order are reproducible; files of other types are left out."""
    found = sorted(osp.join(root, name)
                   for root, _, names in os.walk(folder)
                   for name in names if is_image(name))
    if not found:
        raise NoImagesError(
            f'no images ({", ".join(IMAGE_SUFFIXES)}) under {folder}')
    return found


def image_files(paths: Sequence[str]) -> List[str]:
    """The image files named by ``paths``: files as given (whatever their
    suffix), folders searched recursively (:func:`images_under`)."""
    files = []
    for path in paths:
        if osp.isdir(path):
            files += images_under(path)
        elif osp.isfile(path):
            files.append(path)
        else:
            raise FileNotFoundError(f'image not found: {path}')
    return files
