# Everything of the paper's 200-epoch recipe (Table 5) but the arch.
_base_ = [
    './models/repvgg_cls_lbs_mixup.py', './datasets/imagenet_200e.py',
    './schedules/sgd_cosine_warmup_200e.py', './default_runtime.py'
]
