import json
import os
import os.path as osp

import pytest
import torch

import repvgg_seg  # noqa: F401  (registers the project's modules)
from tests.helpers import TINY_ARCHS

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
SHARED_KEYS = osp.join(REPO, '..', 'shared', 'reference',
                       'official_checkpoint_keys.json')
# A copy ships with the tests so they do not depend on the shared folder.
LOCAL_KEYS = osp.join(REPO, 'tests', 'data', 'official_checkpoint_keys.json')

torch.set_num_threads(min(2, os.cpu_count() or 1))
# openvino's Python package sends a usage event to Google Analytics on import
# unless the user opted out; it skips that (and writes nothing to ~/intel)
# when CI=true. The suite must not phone home.
os.environ.setdefault('CI', 'true')


def pytest_configure(config):
    config.addinivalue_line(
        'markers', 'gpu: needs a CUDA device (pytest -m gpu); skipped, with '
        'the reason, where none is visible')


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason='needs a CUDA device: none is visible '
                            '(torch.cuda.is_available() is False)')
    for item in items:
        if 'gpu' in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope='session')
def official_keys():
    """Key names and shapes of the official checkpoints, per arch."""
    path = LOCAL_KEYS if osp.exists(LOCAL_KEYS) else SHARED_KEYS
    with open(path) as f:
        return json.load(f)


# The demo config (configs/demo/): the one path every test module uses.
DEMO_CONFIG = osp.join(REPO, 'configs', 'demo',
                       'pspnet_repvgg_a0_synthetic.py')


@pytest.fixture
def restore_default_scope():
    """mmengine's current default scope is global state (a Runner or
    ``register_all_modules`` sets it): put it back after the test, so that
    other test modules see theirs."""
    import copy

    from mmengine.registry import DefaultScope
    saved = copy.copy(DefaultScope._instance_dict)
    yield
    DefaultScope._instance_dict = saved
# The demo's model and pipeline shrunk to seconds per run: 64x64 crops, a
# quarter-width 5-block RepVGG (TINY_ARCHS['segmentor']), deterministic CPU
# settings. Why both this and TINY_OPTIONS below: this is a config *file*
# (the tools take a path; TINY_EPOCH_CONFIG inherits it) with a tiny
# backbone, for tests that need any small segmentor; TINY_OPTIONS keeps the
# demo's A0 and shrinks only the data and schedule, for tests that need the
# demo model itself trained. They share only the 64x64 data: one written as
# the other plus overrides would undo half of it (backbone, heads, workers,
# learning rate, schedule, the one-image train set), so both are spelled
# out.
TINY_CONFIG = """
_base_ = {demo!r}
model = dict(
    data_preprocessor=dict(size=(64, 64)),
    backbone=dict(arch=dict(_delete_=True, **{arch!r})),
    decode_head=dict(in_channels=128, channels=8),
    auxiliary_head=dict(in_channels=64, channels=8))
train_dataloader = dict(
    batch_size=2, num_workers=1,
    dataset=dict(data_root={root!r}, pipeline=[
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations'),
        dict(type='RandomResize', scale=(128, 64), ratio_range=(0.75, 1.5),
             keep_ratio=True),
        dict(type='RandomCrop', crop_size=(64, 64), cat_max_ratio=0.75),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PhotoMetricDistortion'),
        dict(type='PackSegInputs')]))
val_dataloader = dict(num_workers=0, persistent_workers=False,
                      dataset=dict(data_root={root!r}))
test_dataloader = val_dataloader
train_cfg = dict(max_iters={iters}, val_interval=1000)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, begin=0, end=2, by_epoch=False),
    dict(type='PolyLR', power=0.9, eta_min=0.0, begin=2, end={iters},
         by_epoch=False)]
default_hooks = dict(
    logger=dict(interval=1),
    checkpoint=dict(interval={ckpt_interval}, max_keep_ckpts=10))
randomness = dict(seed=0, deterministic=True)
"""
# The same with the Table 8 configs' epoch-based loop: 6 images in batches
# of 2 make 3 iterations per epoch; non-persistent workers so that a resumed
# run can reproduce the augmentations.
TINY_EPOCH_CONFIG = """
_base_ = {tiny!r}
train_dataloader = dict(persistent_workers=False,
                        sampler=dict(type='DefaultSampler', shuffle=True))
train_cfg = dict(_delete_=True, type='ResumableEpochBasedTrainLoop',
                 max_epochs={epochs}, val_interval=1000)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, begin=0, end=2, by_epoch=False),
    dict(type='PolyLR', power=0.9, eta_min=0.0, begin=2, end={iters},
         by_epoch=False)]
default_hooks = dict(checkpoint=dict(interval={ckpt_interval}))
"""


@pytest.fixture(scope='session')
def synthetic_root(tmp_path_factory):
    """A tiny synthetic mini-Cityscapes: 6 train and 2 val images, 64x128."""
    from repvgg_seg.datasets import make_synthetic_cityscapes
    root = str(tmp_path_factory.mktemp('synthetic'))
    make_synthetic_cityscapes(root, num_train=6, num_val=2, size=(64, 128),
                              seed=0, overwrite=True)
    return root


@pytest.fixture(scope='session')
def tiny_config(tmp_path_factory, synthetic_root):
    """A 9-iteration iteration-based run, checkpoints every 3 iterations."""
    path = tmp_path_factory.mktemp('cfg') / 'tiny_seg.py'
    path.write_text(TINY_CONFIG.format(
        demo=DEMO_CONFIG, arch=TINY_ARCHS['segmentor'], root=synthetic_root,
        iters=9, ckpt_interval=3))
    return str(path)


@pytest.fixture(scope='session')
def tiny_epoch_config(tmp_path_factory, tiny_config):
    """4 epochs of 3 iterations, checkpoints every 4 iterations (so the
    periodic ones fall mid-epoch)."""
    path = tmp_path_factory.mktemp('cfg') / 'tiny_seg_epochs.py'
    path.write_text(TINY_EPOCH_CONFIG.format(
        tiny=tiny_config, iters=12, epochs=4, ckpt_interval=4))
    return str(path)


# The demo config shrunk for runs of a few seconds: 64x64 crops, 10
# iterations learning one image, no workers. Shared by the tests that need
# a trained model (test, deploy, INT8 round trips); see TINY_CONFIG for
# why both exist.
TINY_OPTIONS = {
    'model.decode_head.channels': 16,
    'model.auxiliary_head.channels': 8,
    'train_dataloader.batch_size': 2,
    'train_dataloader.num_workers': 0,
    'train_dataloader.persistent_workers': False,
    'val_dataloader.num_workers': 0,
    'val_dataloader.persistent_workers': False,
    'test_dataloader.num_workers': 0,
    'test_dataloader.persistent_workers': False,
    'model.data_preprocessor.size': (64, 64),
    'train_dataloader.dataset.pipeline.2.scale': (128, 64),
    'train_dataloader.dataset.pipeline.3.crop_size': (64, 64),
    'train_dataloader.dataset.indices': 1,  # learn one image
    'train_cfg.max_iters': 10,
    'train_cfg.val_interval': 100,
    'param_scheduler.0.end': 2,
    'param_scheduler.1.begin': 2,
    'param_scheduler.1.end': 10,
    'default_hooks.checkpoint.interval': 10,
    'default_hooks.logger.interval': 1,
    'optim_wrapper.optimizer.lr': 0.01,
    'randomness.seed': 0,
    'randomness.deterministic': True}


def tiny_options(root, **extra):
    """:data:`TINY_OPTIONS` reading the synthetic data set at ``root``."""
    options = dict(TINY_OPTIONS)
    for loader in ('train', 'val', 'test'):
        options[f'{loader}_dataloader.dataset.data_root'] = root
    options.update(extra)
    return options


def tiny_test_options(root):
    """The ``--cfg-options`` a test run of the tiny model needs."""
    return {k: v for k, v in tiny_options(root).items()
            if k.startswith(('test_', 'model.'))}


@pytest.fixture(scope='session')
def tiny_trained(synthetic_root, tmp_path_factory):
    """The demo's PSPNet-RepVGG-A0 trained for 10 iterations on the
    synthetic data (about 20 s): ``dict(config, checkpoint, work_dir,
    losses, options)``; ``options`` are the test-time overrides."""
    from repvgg_seg.runs import build_runner, setup_train_cfg
    work_dir = str(tmp_path_factory.mktemp('tiny_trained'))
    cfg = setup_train_cfg(DEMO_CONFIG, work_dir=work_dir,
                          cfg_options=tiny_options(synthetic_root))
    runner = build_runner(cfg)
    runner.train()
    losses = runner.message_hub.get_scalar('train/loss').data[0]
    return dict(config=DEMO_CONFIG, work_dir=work_dir,
                checkpoint=osp.join(work_dir, 'iter_10.pth'),
                losses=list(losses), options=tiny_test_options(synthetic_root))


@pytest.fixture(scope='session')
def tiny_checkpoint(tmp_path_factory, tiny_config):
    """An (untrained) checkpoint of the tiny test segmentor."""
    from repvgg_seg.apis import build_model
    path = tmp_path_factory.mktemp('ckpt') / 'tiny.pth'
    torch.save({'state_dict': build_model(tiny_config).state_dict(),
                'meta': {}}, path)
    return str(path)


@pytest.fixture(scope='session')
def tiny_deploy(tmp_path_factory, tiny_config, tiny_checkpoint):
    """tools/convert.py's deploy checkpoint of :func:`tiny_checkpoint`,
    written to folders that do not exist yet as in the README
    (``deploy/tiny/fast.pth``): ``dict(checkpoint, config)``, the deploy
    config next to it."""
    from tests.helpers import run_tool
    out = tmp_path_factory.mktemp('convert') / 'deploy' / 'tiny' / 'fast.pth'
    code, err = run_tool('convert', tiny_config, tiny_checkpoint, str(out),
                         '--shape', '64', '64')
    assert code == 0, err
    return dict(checkpoint=str(out), config=str(out)[:-4] + '_deploy.py')
