# Everything of a Table 8 RepVGG experiment but the arch-specific values.
_base_ = [
    './models/pspnet_repvgg.py', './datasets/cityscapes_713x713.py',
    './schedules/poly_40e.py', './default_runtime.py'
]
# Training batches padded to the crop, as in mmseg's configs: its data
# preprocessor cannot stack a training batch without a size (an
# AssertionError at the first iteration), and RandomCrop cannot crop more
# than the resized image (0.5 x 2048x1024 is 1024x512), so some crops are
# smaller than 713x713; padded to it, every batch has one shape, which
# cudnn_benchmark tunes for once.
crop_size = _base_.crop_size  # the data set's, 713x713
data_preprocessor = dict(size=crop_size)
model = dict(data_preprocessor=data_preprocessor)
