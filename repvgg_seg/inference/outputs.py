"""What inference writes for an image: an overlay of the prediction on the
image and a label map PNG (drawn by :class:`.drawing.LabelPainter`).
Files are written atomically
(:func:`repvgg_seg.io.files.atomic_write_bytes`): a killed run leaves no
half-written output, so a rerun can trust every file it finds, and
removes the temporary files the killed run left (:func:`remove_partials`).
"""
import os
import os.path as osp
import re
from collections import defaultdict
from typing import Container, Dict, Iterable, List, Optional

import numpy as np

from ..errors import InputError, check_choice
from ..io.files import atomic_write_bytes, remove_quietly
from .drawing import LabelPainter, encode_image

#: the overlay formats (``--vis-format``): JPEG (quality 95) is a tenth of
#: PNG's encoding time (0.6 vs 6-7 ms at 512x256) and a fifth of its size
VIS_SUFFIXES = ('.jpg', '.png')


class OutputWriter(LabelPainter):
    """Draws and writes the outputs of one image (see the module
    docstring): the overlay in ``vis_suffix`` and, with ``save_pred``, the
    label map in that format."""

    def __init__(self, out_dir: str, dataset_meta: dict,
                 save_vis: bool = True, save_pred: Optional[str] = None,
                 opacity: float = 0.5, with_labels: bool = False,
                 legend: bool = False, vis_suffix: str = '.jpg'):
        check_choice('overlay format', vis_suffix, VIS_SUFFIXES)
        super().__init__(dataset_meta, opacity, with_labels, legend,
                         label_format=save_pred)
        self.out_dir = out_dir
        self.save_vis = save_vis
        self.save_pred = save_pred
        self.vis_suffix = vis_suffix

    # where things go

    def vis_path(self, name: str) -> str:
        return osp.join(self.out_dir, 'vis', name + self.vis_suffix)

    def pred_path(self, name: str) -> str:
        return osp.join(self.out_dir, 'pred', name + '.png')

    def paths(self, name: str) -> List[str]:
        """The files written for the image called ``name``."""
        return ([self.vis_path(name)] if self.save_vis else []) + \
            ([self.pred_path(name)] if self.save_pred else [])

    def done(self, name: str) -> bool:
        """Whether every output of ``name`` exists (a rerun skips it)."""
        return all(osp.isfile(p) for p in self.paths(name))

    def read_labels(self, name: str) -> Optional[np.ndarray]:
        """The train ids of ``name``'s label map as an earlier run wrote
        it, or None where there is none or it is not one
        (:meth:`labels_of_map`)."""
        import cv2
        path = self.pred_path(name)
        if not self.save_pred or not osp.isfile(path):
            return None
        label_map = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        return None if label_map is None else self.labels_of_map(label_map)

    # writing

    def write(self, name: str, image_bgr: Optional[np.ndarray],
              labels: np.ndarray) -> Dict[str, str]:
        """Write the outputs of one image; returns ``{kind: path}``."""
        written = {}
        if self.save_vis:
            path = self.vis_path(name)
            atomic_write_bytes(encode_image(self.overlay(image_bgr, labels),
                                            self.vis_suffix), path)
            written['vis'] = path
        if self.save_pred:
            written['pred'] = self.write_label_map(name, labels)
        return written

    def write_label_map(self, name: str, labels: np.ndarray) -> str:
        """Write the label map of ``name``; returns its path."""
        path = self.pred_path(name)
        atomic_write_bytes(encode_image(self.label_map(labels)), path)
        return path


#: a temporary file of :func:`repvgg_seg.io.files.temp_path`:
#: ``.<stem>.<8 random characters>.partial<suffix>``, and the
#: ``.partial.tmp.mp4`` videos that earlier versions wrote
PARTIAL_FILE = re.compile(
    r'\.(?P<stem>.+)\.[a-z0-9_]{8}\.partial(?:\.tmp)?(?P<suffix>\.[^.]*)')


def remove_partials(folder: str,
                    outputs: Optional[Container[str]] = None) -> int:
    """Remove the temporary files that a killed run left in ``folder`` for
    the ``outputs`` (file names in it; None: for any file), as a rerun
    that rewrites those outputs finds them. Returns how many."""
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return 0
    removed = 0
    for entry in entries:
        match = PARTIAL_FILE.fullmatch(entry.name)
        if match and entry.is_file() and (outputs is None or (
                match['stem'] + match['suffix']) in outputs):
            remove_quietly(entry.path)
            removed += 1
    return removed


def remove_partials_of(paths: Iterable[str]) -> None:
    """:func:`remove_partials` for these output paths, folder by folder."""
    by_folder = defaultdict(set)
    for path in paths:
        by_folder[osp.dirname(path)].add(osp.basename(path))
    for folder, names in by_folder.items():
        remove_partials(folder, names)


def check_out_dir(out_dir: str) -> None:
    """``--out-dir`` must be a folder (or not exist yet)."""
    if osp.exists(out_dir) and not osp.isdir(out_dir):
        raise InputError(f'--out-dir {out_dir} is a file, not a folder')
