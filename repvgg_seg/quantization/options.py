"""What an INT8 quantization of a segmentor does: :class:`QuantizeOptions`,
the one set of options of :func:`.quantize.quantize_segmentor` and its
stages (``tools/quantize.py`` builds it from its arguments)."""
from dataclasses import dataclass
from typing import Optional, Sequence

from ..apis.build import checked_shape
from ..errors import InputError, check_choice
from ..evaluation.metrics import METRICS

#: where the calibration images come from
CALIB_SPLITS = ('train', 'val')
#: NNCF's presets: symmetric (performance) or asymmetric (mixed)
#: activations
PRESETS = ('performance', 'mixed')


@dataclass
class QuantizeOptions:
    """The options of :func:`.quantize.quantize_segmentor`.

    Images (:mod:`.images`): ``shape``, the IR's input size (default: the
    slide crop, or the preprocessed size of whole images);
    ``calib_images`` calibration images of the ``calib_split``
    (:data:`CALIB_SPLITS`) and ``heldout_images`` held-out ones (``None``:
    every image of the split; held out: every one that is not a
    calibration image); ``generated``: generated images instead (speed
    tests only).

    Quantization: ``preset`` (:data:`PRESETS`); ``equalize``: cross-layer
    equalization first (:mod:`.equalize`; exact in fp32, checked to 1e-5);
    ``metric`` (:data:`~repvgg_seg.evaluation.metrics.METRICS`), scored on
    the held-out images for fp32 and INT8; with ``max_drop`` (points)
    NNCF's accuracy control keeps layers in fp32 until INT8 is within it,
    ``max_fp32_layers`` of them at most; ``keep_fp32``: globs of layer names
    (``backbone.stage4.*``) left in fp32; ``sensitivity``: the per-layer
    table (:func:`.sensitivity.layer_sensitivity`) in the report, for the
    layers these globs select (``[]``: every layer; ``None``: no table).

    The gate and the outputs: nothing is written below ``min_agreement``
    (% of held-out pixels whose argmax agrees with fp32 torch), nor when
    the metric dropped by more than ``max_drop``; ``force`` overwrites
    existing outputs; ``out_json`` also writes the report there;
    ``cfg_options`` are applied to the config.
    """
    shape: Optional[Sequence[int]] = None
    calib_images: Optional[int] = 50
    calib_split: str = 'train'
    heldout_images: Optional[int] = 20
    generated: bool = False
    preset: str = 'performance'
    equalize: bool = True
    metric: str = 'auto'
    max_drop: Optional[float] = None
    max_fp32_layers: Optional[int] = None
    keep_fp32: Sequence[str] = ()
    sensitivity: Optional[Sequence[str]] = None
    min_agreement: float = 98.0
    force: bool = False
    out_json: Optional[str] = None
    cfg_options: Optional[dict] = None

    def check(self) -> None:
        """:class:`InputError` for a value out of its range, named as the
        tool's option."""
        for option, count in (('--calib-images', self.calib_images),
                              ('--heldout-images', self.heldout_images)):
            if count is not None and count < 1:
                raise InputError(f'{option} must be at least 1, got {count}')
        check_choice('calibration split', self.calib_split, CALIB_SPLITS)
        check_choice('preset', self.preset, PRESETS)
        if not 0 <= self.min_agreement <= 100:
            raise InputError(f'--min-agreement is a percentage (0-100), got '
                             f'{self.min_agreement:g}')
        if self.max_drop is not None and not 0 <= self.max_drop <= 100:
            raise InputError(f'--max-drop is a drop of the metric in points '
                             f'(0-100), got {self.max_drop:g}')
        if self.max_fp32_layers is not None and (
                self.max_drop is None or self.max_fp32_layers < 1):
            raise InputError('--max-fp32-layers caps the layers --max-drop '
                             'keeps in fp32: give --max-drop, and a count '
                             f'>= 1, got {self.max_fp32_layers}')
        check_choice('metric', self.metric, METRICS)
        if self.shape:
            checked_shape(self.shape, None)
