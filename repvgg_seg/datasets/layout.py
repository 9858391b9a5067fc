"""The Cityscapes layout that mmseg's ``CityscapesDataset`` reads: the file
name suffixes of images and train-id labels, the ignore label, and the 19
class names in train-id order (mmseg's own ``METAINFO``)."""
from mmseg.datasets import CityscapesDataset

IMG_SUFFIX = '_leftImg8bit.png'
SEG_MAP_SUFFIX = '_gtFine_labelTrainIds.png'
IGNORE = 255
CLASSES = tuple(CityscapesDataset.METAINFO['classes'])
