"""Reliability: crash-safe training, safe loading on every path, and a clear
error (with nothing lost) for every kind of bad input."""
import json
import os
import os.path as osp
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from tests.conftest import REPO
from tests.helpers import run_tool

DEMO = osp.join(REPO, 'configs', 'demo', 'pspnet_repvgg_a0_synthetic.py')
TINY_CONFIG = """
_base_ = {demo!r}
model = dict(
    data_preprocessor=dict(size=(64, 64)),
    backbone=dict(arch=dict(_delete_=True, num_blocks=(1, 1, 2, 1),
                            width_factor=(0.25, 0.25, 0.25, 0.25))),
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
    checkpoint=dict(interval=3, max_keep_ckpts=10))
randomness = dict(seed=0, deterministic=True)
"""


@pytest.fixture(scope='module')
def synthetic_root(tmp_path_factory):
    from repvgg_seg.datasets import make_synthetic_cityscapes
    root = str(tmp_path_factory.mktemp('synthetic'))
    make_synthetic_cityscapes(root, num_train=4, num_val=2, size=(64, 128),
                              seed=0, overwrite=True)
    return root


@pytest.fixture(scope='module')
def tiny_config(tmp_path_factory, synthetic_root):
    path = tmp_path_factory.mktemp('cfg') / 'tiny_seg.py'
    path.write_text(TINY_CONFIG.format(demo=DEMO, root=synthetic_root,
                                       iters=9))
    return str(path)


def _train_cmd(config, work_dir, *extra):
    return [sys.executable, osp.join(REPO, 'tools', 'train.py'), config,
            '--work-dir', str(work_dir), *extra]


def _logged_losses(work_dir) -> dict:
    """{iteration: loss} from every run's scalars.json in a work dir."""
    losses = {}
    for path in sorted(
            p for p in _walk(work_dir) if p.endswith('scalars.json')):
        with open(path) as f:
            for line in f:
                row = json.loads(line)
                if 'loss' in row:
                    losses[row['iter']] = row['loss']
    return losses


def _walk(folder):
    for root, _, files in os.walk(folder):
        for name in files:
            yield osp.join(root, name)


@pytest.fixture(scope='module')
def reference_losses(tmp_path_factory, tiny_config):
    work_dir = tmp_path_factory.mktemp('reference')
    subprocess.run(_train_cmd(tiny_config, work_dir), check=True,
                   capture_output=True, cwd=REPO, timeout=600)
    losses = _logged_losses(work_dir)
    assert sorted(losses) == list(range(1, 10))
    return losses


def _run_until(command, work_dir, iteration, timeout=300):
    """Start training and return the process once ``iteration`` is logged."""
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if iteration in _logged_losses(work_dir):
            return proc
        if proc.poll() is not None:
            raise AssertionError(f'training ended early ({proc.returncode})')
        time.sleep(0.05)
    proc.kill()
    raise AssertionError('training did not reach the iteration in time')


@pytest.mark.parametrize('how', ['SIGKILL', 'SIGTERM'])
def test_killed_run_resumes_with_the_same_loss_curve(tmp_path, tiny_config,
                                                     reference_losses, how):
    work_dir = tmp_path / 'work'
    proc = _run_until(_train_cmd(tiny_config, work_dir), work_dir, 5)
    proc.send_signal(getattr(signal, how))
    code = proc.wait(timeout=120)
    saved = sorted(p for p in os.listdir(work_dir) if p.endswith('.pth'))
    if how == 'SIGKILL':
        assert code == -signal.SIGKILL
        resume_point = 3  # the last periodic checkpoint
    else:
        # SIGTERM: the iteration in flight finishes and is saved
        assert code == 128 + signal.SIGTERM
        resume_point = int(open(work_dir / 'last_checkpoint').read()
                           .strip().rsplit('_', 1)[1].split('.')[0])
        assert resume_point >= 5
        assert f'iter_{resume_point}.pth' in saved
    assert not [p for p in os.listdir(work_dir) if p.endswith('.partial')]
    subprocess.run(_train_cmd(tiny_config, work_dir, '--resume'),
                   check=True, capture_output=True, cwd=REPO, timeout=600)
    resumed = {}
    runs = sorted(d for d in os.listdir(work_dir)
                  if osp.isdir(work_dir / d))
    resumed = _logged_losses(work_dir / runs[-1])
    assert sorted(resumed) == list(range(resume_point + 1, 10))
    for iteration, loss in resumed.items():
        assert loss == pytest.approx(reference_losses[iteration], abs=1e-6)


def test_atomic_checkpoint_write_keeps_previous_file(tmp_path, monkeypatch):
    """A failure mid-write (here: a full disk) leaves the previous file
    intact and no partial file behind, with an error naming the file."""
    from mmengine.runner.checkpoint import save_checkpoint

    import repvgg_seg  # noqa: F401  (registers the atomic backend)
    target = tmp_path / 'iter_3.pth'
    save_checkpoint({'state_dict': {'w': torch.ones(2)}}, str(target))
    before = target.read_bytes()

    real_fsync = os.fsync

    def full_disk(fd):
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(os, 'fsync', full_disk)
    with pytest.raises(OSError, match='could not write .*iter_3.pth: the '
                       'disk is full; earlier files are untouched'):
        save_checkpoint({'state_dict': {'w': torch.zeros(2)}}, str(target))
    monkeypatch.setattr(os, 'fsync', real_fsync)
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ['iter_3.pth']


def test_nan_loss_stops_with_iteration_and_keeps_last_checkpoint(
        tmp_path, tiny_config):
    from mmengine.hooks import Hook

    from repvgg_seg import NonFiniteLossError
    from repvgg_seg.runner import build_runner, setup_train_cfg

    class PoisonLoss(Hook):
        def before_train_iter(self, runner, batch_idx, data_batch=None):
            if runner.iter == 4:  # the 5th iteration
                runner.model.decode_head.loss_decode.loss_weight = float(
                    'nan')

    cfg = setup_train_cfg(tiny_config, work_dir=str(tmp_path),
                          cfg_options={'train_dataloader.num_workers': 0,
                                       'train_dataloader.persistent_workers':
                                       False})
    runner = build_runner(cfg)
    runner.register_hook(PoisonLoss())
    with pytest.raises(NonFiniteLossError,
                       match=r'loss became nan at iteration 5 .*last good '
                       r'checkpoint is .*iter_3\.pth'):
        runner.train()
    assert sorted(p for p in os.listdir(tmp_path) if p.endswith('.pth')) \
        == ['iter_3.pth']
    from repvgg_seg import load_checkpoint_file
    state = load_checkpoint_file(tmp_path / 'iter_3.pth')['state_dict']
    assert all(torch.isfinite(v).all() for v in state.values()
               if v.is_floating_point())


def _evil_checkpoint(path, marker):
    class Exploit:
        def __reduce__(self):
            return (os.system, (f'touch {marker}',))

    torch.save({'state_dict': {'w': torch.zeros(1)}, 'x': Exploit()}, path)


def test_malicious_checkpoint_refused_on_every_path(tmp_path, tiny_config,
                                                    capsys):
    """A checkpoint whose unpickling would create a file is refused by the
    backbone's init_cfg, load_from, --resume, and the test, convert, export
    and benchmark tools; the file is never created, nor any output."""
    from repvgg_seg import UnsafeCheckpointError
    from repvgg_seg.models import RepVGG
    marker = tmp_path / 'pwned'
    evil = tmp_path / 'evil.pth'
    _evil_checkpoint(evil, marker)

    backbone = RepVGG('A0', init_cfg=dict(type='Pretrained',
                                          checkpoint=str(evil)))
    with pytest.raises(UnsafeCheckpointError, match='posix.system'):
        backbone.init_weights()

    from mmengine.runner import load_checkpoint
    with pytest.raises(UnsafeCheckpointError):
        load_checkpoint(torch.nn.Linear(1, 1), str(evil))

    work = str(tmp_path / 'work')
    options = ['--cfg-options', 'train_dataloader.num_workers=0',
               'train_dataloader.persistent_workers=False']
    for tool, args in (
            ('test', [tiny_config, str(evil), '--work-dir', work]),
            ('train', [tiny_config, '--work-dir', work, '--resume',
                       str(evil)] + options),
            ('train', [tiny_config, '--work-dir', work] + options +
             [f'load_from={evil}']),
            ('convert', [tiny_config, str(evil), str(tmp_path / 'd.pth')]),
            ('export_onnx', [tiny_config, str(evil),
                             str(tmp_path / 'm.onnx'), '--shape', '64',
                             '64']),
            ('benchmark', [tiny_config, '--checkpoint', str(evil),
                           '--shape', '64', '64', '--iters', '1'])):
        code, err = run_tool(tool, *args, capsys=capsys)
        assert code == 2, err
        assert 'refused to load' in err and '--trust-checkpoint' in err
    assert not marker.exists()
    assert not (tmp_path / 'd.pth').exists()
    assert not (tmp_path / 'm.onnx').exists()


def test_trust_flag_loads_a_trusted_pickle(tmp_path):
    from repvgg_seg import load_checkpoint_file
    path = tmp_path / 'trusted.pth'
    torch.save({'state_dict': {}, 'extra': np.random.default_rng(0)}, path)
    with pytest.raises(Exception, match='refused to load'):
        load_checkpoint_file(path)
    assert 'extra' in load_checkpoint_file(path, trusted=True)


@pytest.mark.parametrize('args,message', [
    (['tools/train.py', 'configs/pspnet_repvgg_b9.py'],
     'config file not found: configs/pspnet_repvgg_b9.py'),
    (['tools/train.py', 'configs/pspnet_repvgg_a0_fast.py', '--cfg-options',
      'model.backbone.archh=A0'], "unexpected keyword argument 'archh'"),
    (['tools/train.py', 'configs/pspnet_repvgg_a0_fast.py', '--cfg-options',
      'model.backbone.arch=A9'], "unknown RepVGG arch 'A9'; valid archs"),
    (['tools/train.py', 'configs/pspnet_repvgg_a0_fast.py', '--cfg-options',
      'model.backbone.dilation=last2'],
     "invalid dilation mode 'last2'; valid modes: None, 'last_two_stages', "
     "'fast'"),
    (['tools/train.py', 'configs/pspnet_repvgg_a0_fast.py', '--cfg-options',
      'model.backbone.out_indices=(1,2,3,7)'], 'out_indices must be'),
    (['tools/test.py', 'configs/pspnet_repvgg_a0_fast.py', 'missing.pth'],
     'checkpoint file not found: missing.pth'),
])
def test_bad_command_lines_give_one_clear_line(args, message, tmp_path,
                                               capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    tool = osp.splitext(osp.basename(args[0]))[0]
    code, err = run_tool(tool, *args[1:], '--work-dir', str(tmp_path / 'w'),
                         capsys=capsys)
    assert code == 2
    assert message in err


def test_unwritable_work_dir(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    blocked = tmp_path / 'file_not_dir'
    blocked.write_text('')
    code, err = run_tool('train', 'configs/pspnet_repvgg_a0_fast.py',
                         '--work-dir', str(blocked / 'sub'), capsys=capsys)
    assert code == 2
    assert f'cannot create work dir {blocked}/sub' in err
