"""Data sets: a synthetic mini-Cityscapes, Cityscapes preparation and
checks that a data set loads correctly in mmseg."""
from .checks import DatasetError, DatasetReport, check_segmentation_dataset
from .cityscapes_prep import label_id_to_train_id_lut, prepare_cityscapes
from .synthetic import draw_street_scene, make_synthetic_cityscapes

__all__ = [
    'DatasetError', 'DatasetReport', 'check_segmentation_dataset',
    'label_id_to_train_id_lut', 'prepare_cityscapes', 'draw_street_scene',
    'make_synthetic_cityscapes'
]
