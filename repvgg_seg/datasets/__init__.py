"""Data sets: a synthetic mini-Cityscapes, Cityscapes preparation, the
ImageNet layout check, and checks that a data set loads correctly in
mmseg."""
from .checks import DatasetError, DatasetReport, check_segmentation_dataset
from .cityscapes import label_id_to_train_id_lut, prepare_cityscapes
from .imagenet import check_imagenet
from .synthetic import draw_street_scene, make_synthetic_cityscapes

__all__ = [
    'DatasetError', 'DatasetReport', 'check_segmentation_dataset',
    'label_id_to_train_id_lut', 'prepare_cityscapes', 'check_imagenet',
    'draw_street_scene', 'make_synthetic_cityscapes'
]
