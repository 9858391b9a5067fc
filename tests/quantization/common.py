"""Helpers of the quantization tests: the tiny trained model's options
with its data splits, as a tool's ``--cfg-options``."""


def data_options(trained, synthetic_root, **extra):
    """The tiny model's test options, with the train and val splits at the
    synthetic data set."""
    options = dict(trained['options'])
    for split in ('train', 'val'):
        options[f'{split}_dataloader.dataset.data_root'] = synthetic_root
    options.update(extra)
    return options


def option_args(options):
    """``options`` as a tool's ``--cfg-options k=v ...`` arguments."""
    return ['--cfg-options'] + [f'{k}={v}' for k, v in options.items()]
