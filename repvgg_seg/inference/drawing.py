"""Drawing a prediction: the overlay of the labels on the image (mmseg's
``SegLocalVisualizer`` colours, optionally the class names and a legend of
the classes present) and the label map's pixels in a format -- train ids,
Cityscapes label ids (the official evaluation server's format, mapped with
cityscapesscripts' label table as mmseg's ``CityscapesDataset`` does) or
the palette colours. ``tools/infer.py``'s files and the HTTP service's
responses are drawn here.
"""
import threading
from typing import Optional

import numpy as np

from ..errors import InputError, check_choice

#: the label map formats (``--save-pred``)
PRED_FORMATS = ('trainid', 'labelid', 'color')


def encode_image(image: np.ndarray, suffix: str = '.png') -> bytes:
    """A BGR (or single-channel) image encoded as ``suffix`` by OpenCV."""
    import cv2
    ok, data = cv2.imencode(suffix, np.ascontiguousarray(image))
    if not ok:
        raise OSError(f'cannot encode a {suffix} image')
    return data.tobytes()


def cityscapes_label_ids(num_classes: int) -> np.ndarray:
    """The 256-entry lookup table train id -> Cityscapes label id
    (cityscapesscripts' ``trainId2label``); train ids the table lacks map
    to 0 (unlabeled)."""
    from cityscapesscripts.helpers.labels import trainId2label
    lut = np.zeros(256, np.uint8)
    for train_id, label in trainId2label.items():
        if 0 <= train_id < 255 and label.id >= 0:
            lut[train_id] = label.id
    missing = [t for t in range(num_classes) if t not in trainId2label]
    if missing:
        raise InputError(f'--save-pred labelid is the Cityscapes label ids; '
                         f'this model has {num_classes} classes and train ids '
                         f'{missing} are not Cityscapes train ids')
    return lut


class LabelPainter:
    """Draws the labels of one model's classes (``dataset_meta``: classes
    and palette): overlays with ``opacity`` (class names with
    ``with_labels``, a legend strip with ``legend``) and label maps in
    ``label_format`` (one of :data:`PRED_FORMATS`; None: train ids)."""

    def __init__(self, dataset_meta: dict, opacity: float = 0.5,
                 with_labels: bool = False, legend: bool = False,
                 label_format: Optional[str] = None):
        if label_format is not None:
            check_choice('--save-pred', label_format, PRED_FORMATS)
        if not 0 <= opacity <= 1:
            raise InputError(f'--opacity is between 0 and 1, got {opacity}')
        self.classes = list(dataset_meta['classes'])
        self.palette = np.array(dataset_meta['palette'], np.uint8)
        self.opacity = opacity
        self.with_labels = with_labels
        self.legend = legend
        self.label_format = label_format
        self.label_ids = (cityscapes_label_ids(len(self.classes))
                          if label_format == 'labelid' else None)
        # BGR colour of every label value; values that are no class (255:
        # ignore) stay black, as mmseg's visualizer leaves them
        self.colour_table = np.zeros((256, 3), np.uint8)
        self.colour_table[:len(self.classes)] = self.palette[
            :len(self.classes), ::-1]
        # mmseg's blend, trunc(pixel * (1 - opacity) + colour * opacity)
        # in float64, for every (pixel, colour) byte pair: the same
        # operations on the same values, so the same bytes, 8x faster on a
        # 512x256 image than computing it per pixel
        values = np.arange(256, dtype=np.float64)
        self.blend_table = (values[:, None] * (1 - opacity) + values[None]
                            * opacity).astype(np.uint8).ravel()
        self._visualizer = None
        # the visualizer draws on one canvas: one image at a time, though
        # the job's workers call overlay() at once
        self._visualizer_lock = threading.Lock()

    @property
    def visualizer(self):
        if self._visualizer is None:
            from mmseg.visualization import SegLocalVisualizer
            self._visualizer = SegLocalVisualizer(
                name=f'repvgg_infer_{id(self)}', alpha=self.opacity)
            self._visualizer.set_dataset_meta(self.classes,
                                              self.palette.tolist())
        return self._visualizer

    def overlay(self, image_bgr: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """The prediction drawn over the image (BGR) as mmseg's
        ``SegLocalVisualizer`` draws it, with a legend strip below when
        asked. Without class names the same blend is computed here with
        lookup tables (the visualizer paints one mask per class, several
        times slower; the result is the same to the byte, tested)."""
        if self.with_labels:
            from mmengine.structures import PixelData
            from mmseg.structures import SegDataSample
            sample = SegDataSample()
            sample.pred_sem_seg = PixelData(
                data=labels[None].astype(np.int64))
            with self._visualizer_lock:
                self.visualizer.add_datasample(
                    'image', image_bgr[..., ::-1], sample, draw_gt=False,
                    draw_pred=True, show=False, with_labels=True)
                drawn = self.visualizer.get_image()[..., ::-1]
        else:
            import cv2
            labels = labels.astype(np.uint8, copy=False)
            mask = cv2.LUT(cv2.merge([labels] * 3), self.colour_table[None])
            pairs = image_bgr.astype(np.uint16)
            pairs <<= 8
            pairs |= mask
            drawn = np.take(self.blend_table, pairs)
        if self.legend:
            drawn = np.concatenate([drawn, self.legend_strip(
                labels, drawn.shape[1])])
        return np.ascontiguousarray(drawn)

    def legend_strip(self, labels: np.ndarray, width: int) -> np.ndarray:
        """A white strip naming the classes present, each with its colour
        (BGR)."""
        import cv2
        present = [int(c) for c in np.unique(labels) if c < len(self.classes)]
        font, scale, thick = cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1
        row_h, pad, box = 20, 6, 12
        x, rows, entries = pad, 0, []
        for c in present:
            text = self.classes[c]
            w = box + 4 + cv2.getTextSize(text, font, scale, thick)[0][0] + 12
            if x + w > width and x > pad:
                x, rows = pad, rows + 1
            entries.append((c, text, x, rows))
            x += w
        strip = np.full(((rows + 1) * row_h + pad, width, 3), 255, np.uint8)
        for c, text, x, r in entries:
            y = pad + r * row_h
            colour = tuple(int(v) for v in self.palette[c][::-1])
            cv2.rectangle(strip, (x, y), (x + box, y + box), colour, -1)
            cv2.putText(strip, text, (x + box + 4, y + box - 1), font, scale,
                        (0, 0, 0), thick, cv2.LINE_AA)
        return strip

    def label_map(self, labels: np.ndarray) -> np.ndarray:
        """The label PNG's pixels in the ``save_pred`` format."""
        labels = labels.astype(np.uint8)
        if self.label_format == 'labelid':
            return self.label_ids[labels]
        if self.label_format == 'color':
            return self.palette[labels][..., ::-1]
        return labels

    def labels_of_map(self, label_map: np.ndarray) -> Optional[np.ndarray]:
        """The train ids of a label PNG in the ``save_pred`` format (the
        inverse of :meth:`label_map`), or None where it is not one: another
        format, or a value that is no class's."""
        classes = len(self.classes)
        if self.label_format == 'color':
            if label_map.ndim != 3 or label_map.shape[2] != 3:
                return None
            # a colour as one number; the first class of a colour wins
            codes = label_map.astype(np.int32) @ np.array([1, 256, 65536])
            palette = self.colour_table[:classes].astype(np.int32) @ \
                np.array([1, 256, 65536])
            values, first = np.unique(palette, return_index=True)
            where = np.minimum(np.searchsorted(values, codes), len(values) - 1)
            if not np.array_equal(values[where], codes):
                return None
            return first[where].astype(np.uint8)
        if label_map.ndim != 2:
            return None
        if self.label_format == 'labelid':
            train_ids = np.full(256, 255, np.uint8)
            train_ids[self.label_ids[:classes][::-1]] = np.arange(
                classes)[::-1]
            label_map = train_ids[label_map]
        if label_map.max() >= classes:
            return None
        return label_map.astype(np.uint8, copy=False)
