# Everything of the paper's 120-epoch recipe (Table 4) but the arch.
_base_ = [
    './models/repvgg_cls.py', './datasets/imagenet_120e.py',
    './schedules/sgd_cosine_120e.py', './default_runtime.py'
]
