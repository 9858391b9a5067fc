"""What every runner is: a model on some runtime as a function of a batch.

A :class:`Runner` computes the logits of a batch of preprocessed windows
(``run(x) -> logits``, ``N x C x H x W``) and says what the engines, the
benchmark and an inference job ask of it: ``info`` (facts for reports:
the onnxruntime provider that runs, INT8 conv counts, a Winograd plan),
``input_shape``/``output_shape`` (an exported model's static shapes, ``-1``
where dynamic; ``None`` for a model that takes any shape), ``concurrency``
(calls it runs at once) and whether it also computes the argmax labels in
its graph (``has_labels``, :meth:`Runner.labels`).

It lives here, below the engines, because the backends' runners
(:mod:`.onnxruntime`, :mod:`.openvino`) are runners too; the torch and
Winograd runners are in :mod:`repvgg_seg.engines`.
"""
from typing import List, Optional, Sequence, Tuple

import torch

from ..errors import InputError, check_choice


class Runner:
    """A model as ``run(x) -> logits``; subclasses implement
    :meth:`__call__` (and :meth:`labels` where ``has_labels``)."""

    #: calls it runs at once (OpenVINO's requests in flight)
    concurrency: int = 1
    #: whether :meth:`labels` computes the argmax in the runtime's graph
    has_labels: bool = False

    def __init__(self, info: Optional[dict] = None,
                 input_shape: Optional[Sequence[int]] = None,
                 output_shape: Optional[Sequence[int]] = None):
        self.info = dict(info or {})
        self.input_shape: Optional[List[int]] = (
            None if input_shape is None else list(input_shape))
        self.output_shape: Optional[List[int]] = (
            None if output_shape is None else list(output_shape))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def labels(self, x: torch.Tensor) -> torch.Tensor:
        """The argmax over the classes of ``x``'s logits (``N x H x W``,
        int64 as mmseg's), computed by the runtime; only where
        ``has_labels``."""
        raise InputError(f'{type(self).__name__} computes no labels in its '
                         'graph (has_labels is False)')


#: the devices a runner or the benchmark is given, in words
DEVICE_CHOICES = ('cpu', 'cuda', 'cuda:N')


def parse_device(device) -> Tuple[str, Optional[int]]:
    """``('cpu', None)``, ``('cuda', None)`` (torch's current device) or
    ``('cuda', N)`` from ``cpu``, ``cuda`` or ``cuda:N``; an
    :class:`InputError` naming the valid ones for anything else."""
    kind, sep, index = str(device).partition(':')
    if kind == 'cpu' and not sep:
        return 'cpu', None
    if kind == 'cuda' and (not sep or index.isdigit()):
        return 'cuda', int(index) if sep else None
    check_choice('device', device, DEVICE_CHOICES)
    # only 'cuda:N' itself is left
    raise InputError(f'device {device!r}: N is a GPU index (cuda:0, '
                     'cuda:1 ...)')
