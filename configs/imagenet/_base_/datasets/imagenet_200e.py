# ImageNet-1k, the Table 5 (200 epochs) data pipeline: AutoAugment (the
# ImageNet policy) after random cropping and flipping; the test pipeline and
# batch are those of the 120-epoch setting. (Label smoothing and mixup are in
# the model, see models/repvgg_cls_lbs_mixup.py.)
_base_ = './imagenet_120e.py'

# BGR mean of ImageNet (images are loaded as BGR), the fill of rotations and
# shears
bgr_mean = [103.53, 116.28, 123.675]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224, backend='pillow',
         interpolation='bilinear'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='AutoAugment', policies='imagenet',
         hparams=dict(pad_val=[round(x) for x in bgr_mean],
                      interpolation='bicubic')),
    dict(type='PackInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
