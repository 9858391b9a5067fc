"""The calibration and held-out images of an INT8 quantization
(:class:`~repvgg_seg.evaluation.windows.ImageWindows`: the config's test
pipeline, the model's windows). Held-out images are never calibration
images: the val split when calibrating on train, else the images after the
calibration ones."""
from typing import NamedTuple

from mmengine.logging import print_log

from ..apis.build import default_input_shape
from ..errors import InputError
from ..evaluation.windows import ImageWindows, build_split, test_mode
from .options import QuantizeOptions

#: held-out generated images are seeded apart from the calibration ones
HELDOUT_SEED = 100000


class QuantizationImages(NamedTuple):
    """The calibration and held-out windows, and where each comes from (a
    split name, or ``generated``)."""
    calib: ImageWindows
    heldout: ImageWindows
    calib_from: str
    heldout_from: str


def _generated(model, options: QuantizeOptions) -> QuantizationImages:
    if options.calib_images is None or options.heldout_images is None:
        raise InputError('with generated inputs, give the numbers of '
                         'calibration and held-out images')
    shape = tuple(options.shape or test_mode(model)[1]
                  or default_input_shape(model))
    calib = ImageWindows.generated(model, range(options.calib_images), shape)
    heldout = ImageWindows.generated(
        model, range(HELDOUT_SEED, HELDOUT_SEED + options.heldout_images),
        shape)
    return QuantizationImages(calib, heldout, 'generated', 'generated')


def calibration_and_heldout(cfg, model, options: QuantizeOptions
                            ) -> QuantizationImages:
    """The calibration and held-out images of ``options`` (see the module
    docstring); the windows' ``shape`` is ``options.shape`` or the first
    calibration image's."""
    if options.generated:
        return _generated(model, options)
    split, wanted = options.calib_split, options.calib_images
    dataset = build_split(cfg, split)
    if wanted is None:
        wanted = len(dataset)
    elif len(dataset) < wanted:
        print_log(f'the {split} split has {len(dataset)} images: '
                  f'calibrating on all of them (asked for {wanted})',
                  logger='current', level=30)
    calib_indices = range(min(wanted, len(dataset)))
    heldout_images = options.heldout_images
    if split == 'train':
        heldout_split, held = 'val', build_split(cfg, 'val')
        held_indices = range(len(held) if heldout_images is None
                             else min(heldout_images, len(held)))
    else:
        heldout_split, held = split, dataset
        held_indices = range(len(calib_indices), len(dataset)
                             if heldout_images is None else
                             min(len(dataset),
                                 len(calib_indices) + heldout_images))
        if not held_indices:
            raise InputError(
                f'no held-out images: the {split} split has '
                f'{len(dataset)} images and all are calibration images; '
                f'use --calib-images {max(1, len(dataset) - 1)} or fewer, '
                'or --calib-split train')
    calib = ImageWindows.from_dataset(model, dataset, calib_indices)
    calib.shape = tuple(options.shape or calib.first_shape())
    heldout = ImageWindows.from_dataset(model, held, held_indices,
                                        calib.shape)
    return QuantizationImages(calib, heldout, split, heldout_split)
