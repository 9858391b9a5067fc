_base_ = [
    './models/pspnet_r50-d8.py', './datasets/cityscapes_713x713.py',
    './schedules/poly_40e.py', './default_runtime.py'
]
