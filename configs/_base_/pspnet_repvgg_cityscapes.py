# Everything of a Table 8 RepVGG experiment but the arch-specific values.
_base_ = [
    './models/pspnet_repvgg.py', './datasets/cityscapes_713x713.py',
    './schedules/poly_40e.py', './default_runtime.py'
]
