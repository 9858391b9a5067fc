# Everything of a Table 8 ResNet baseline but the depth.
_base_ = [
    './models/pspnet_r50-d8.py', './datasets/cityscapes_713x713.py',
    './schedules/poly_40e.py', './default_runtime.py'
]
# Batches padded to the training crop (see pspnet_repvgg_cityscapes.py).
crop_size = _base_.crop_size  # the data set's, 713x713
data_preprocessor = dict(size=crop_size)
model = dict(data_preprocessor=data_preprocessor)
