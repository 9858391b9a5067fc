"""What a deployed model scores on held-out images: mmseg's mIoU where the
images have labels, else pixel argmax agreement with the fp32 torch model.

A metric is called as ``metric(run, items)`` (``run``: ``x -> logits`` for
one window at the model's input size, e.g. an OpenVINO model; ``items``: a
subset of :attr:`items`) and returns ``(value, per-item values)``, the
shape NNCF's ``quantize_with_accuracy_control`` takes from its validation
function (the per-item values let it rank layers on the images that suffer
most). Higher is better for both; both are in percent, so a drop is in
points.
"""
import os.path as osp
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..backends.segmentor import EngineSegmentor
from ..errors import InputError, check_choice
from .windows import ImageWindows, build_split

#: ``auto``: mIoU when the held-out images have labels, else agreement
METRICS = ('auto', 'miou', 'agreement')

Run = Callable[[torch.Tensor], torch.Tensor]


class HeldoutAgreement:
    """Pooled pixel argmax agreement (%) with ``reference`` (the fp32 torch
    model, ``x -> logits``) over the windows of ``heldout``; the reference
    labels are computed once."""

    name = 'agreement'

    def __init__(self, heldout: ImageWindows, reference: Run):
        self.windows = heldout
        self.items = list(range(len(heldout.items)))
        self.labels = []
        with torch.no_grad():
            for item in heldout.items:
                self.labels.append([reference(x).argmax(1).to(torch.int16)
                                    for x in heldout.windows_of(item)])

    def __call__(self, run: Run, items: Optional[Sequence[int]] = None
                 ) -> Tuple[float, List[float]]:
        items = self.items if items is None else list(items)
        per_item, agreed, total = [], 0, 0
        for index in items:
            same = count = 0
            windows = self.windows.windows_of(self.windows.items[index])
            for x, expected in zip(windows, self.labels[index]):
                same += int((run(x).argmax(1) == expected).sum())
                count += expected.numel()
            per_item.append(100.0 * same / count)
            agreed += same
            total += count
        return 100.0 * agreed / total, per_item


def _fitted(run: Run, shape: Optional[tuple]) -> Run:
    """``run`` for windows of any size: resized to ``shape`` (the model's
    static input) and the logits back, as the calibration windows are."""
    if not shape:
        return run

    def compute(x):
        if tuple(x.shape[2:]) == tuple(shape):
            return run(x)
        logits = run(F.interpolate(x, size=shape, mode='bilinear',
                                   align_corners=False))
        return F.interpolate(logits, size=x.shape[2:], mode='bilinear',
                             align_corners=False)
    return compute


def _miou(areas: np.ndarray) -> float:
    from mmseg.evaluation import IoUMetric
    metrics = IoUMetric.total_area_to_metrics(
        *(torch.from_numpy(a) for a in areas), metrics=['mIoU'])
    return float(np.nanmean(metrics['IoU']) * 100)


class HeldoutMIoU:
    """mmseg's mIoU (%) on images ``indices`` of the config's ``split``:
    each image through the config's test pipeline (labels loaded), the
    segmentor's own slide/whole inference and post-processing with
    ``encode_decode`` computed by ``run`` (an
    :class:`~repvgg_seg.backends.segmentor.EngineSegmentor`), and the
    areas of mmseg's ``IoUMetric`` (its ``intersect_and_union``/
    ``total_area_to_metrics``, without its per-call table in the log). :class:`InputError` when the
    images have no label files."""

    name = 'miou'

    def __init__(self, cfg, model, split: str, indices: Sequence[int],
                 shape: Optional[tuple] = None):
        self.dataset = build_split(cfg, split, annotations=True)
        self.model = model
        self.items = list(indices)
        self.shape = shape
        missing = [self.dataset.get_data_info(i).get('seg_map_path')
                   for i in self.items]
        missing = [p for p in missing if not p or not osp.isfile(p)]
        if missing:
            raise InputError(
                f'--metric miou needs labelled held-out images: '
                f'{len(missing)} of the {len(self.items)} {split} images '
                f'have no label file (e.g. {missing[0]}); use --metric '
                'agreement')
        self.classes = len(self.dataset.metainfo['classes'])
        self.ignore_index = self.dataset.ignore_index

    def areas(self, run: Run, index: int) -> np.ndarray:
        from mmseg.evaluation import IoUMetric
        sample = self.dataset[index]
        data = dict(inputs=[sample['inputs']],
                    data_samples=[sample['data_samples']])
        segmentor = EngineSegmentor(self.model, _fitted(run, self.shape))
        with torch.no_grad():
            out = segmentor.test_step(data)[0]
        pred = out.pred_sem_seg.data.squeeze(0).cpu()
        label = out.gt_sem_seg.data.squeeze(0).cpu().to(pred.dtype)
        return np.stack([a.numpy() for a in IoUMetric.intersect_and_union(
            pred, label, self.classes, self.ignore_index)])

    def __call__(self, run: Run, items: Optional[Sequence[int]] = None
                 ) -> Tuple[float, List[float]]:
        items = self.items if items is None else list(items)
        total, per_item = 0, []
        for index in items:
            areas = self.areas(run, index)
            per_item.append(_miou(areas))
            total = total + areas
        return _miou(total), per_item


def has_labels(heldout: ImageWindows) -> bool:
    """Whether every held-out image of a data set split has a label
    file."""
    if heldout.source != 'dataset':
        return False
    return all(osp.isfile(heldout.dataset.get_data_info(i).get(
        'seg_map_path') or '') for i in heldout.items)


def heldout_metric(name: str, cfg, model, heldout: ImageWindows,
                   split: str, reference: Run):
    """The metric ``name`` (:data:`METRICS`) of the held-out images:
    ``auto`` is mIoU when they have labels (:func:`has_labels`), else
    agreement; ``miou`` on generated images is an :class:`InputError`."""
    check_choice('metric', name, METRICS)
    if name == 'miou' and heldout.source != 'dataset':
        raise InputError(f'--metric miou needs labelled held-out images; '
                         f'these are {heldout.description} images without '
                         'labels: use --metric agreement')
    if name == 'miou' or (name == 'auto' and has_labels(heldout)):
        return HeldoutMIoU(cfg, model, split, heldout.items, heldout.shape)
    return HeldoutAgreement(heldout, reference)
