"""The safe checkpoint loader: what it reads that torch's weights-only
default refuses, and where NumPy's module names differ."""
import builtins
import os.path as osp
import pickle
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

from repvgg_seg.io.checkpoint import load_checkpoint_file


def test_checkpoints_load_where_numpy_has_no_numpy_core_module(
        tmp_path, monkeypatch):
    """NumPy 1 has numpy.core only (numpy._core came with NumPy 2)."""
    path = tmp_path / 'with_numpy.pth'
    torch.save({'state_dict': {'w': torch.ones(2)},
                'meta': {'array': np.arange(3), 'scalar': np.float64(0.5)}},
               path)
    real_import = builtins.__import__

    def numpy_1_import(name, globals=None, locals=None, fromlist=(),
                       level=0):
        if name.startswith('numpy._core') and (globals or {}).get(
                '__name__') == 'repvgg_seg.io.checkpoint':
            raise ModuleNotFoundError(f"No module named '{name}'")
        return real_import(name, globals, locals, fromlist, level)

    monkeypatch.setattr(builtins, '__import__', numpy_1_import)
    with warnings.catch_warnings():
        # NumPy 2's numpy.core is a deprecated alias
        warnings.simplefilter('ignore', DeprecationWarning)
        checkpoint = load_checkpoint_file(path)
    assert checkpoint['meta']['array'].tolist() == [0, 1, 2]
    assert checkpoint['meta']['scalar'] == 0.5
    assert checkpoint['state_dict']['w'].tolist() == [1.0, 1.0]


class _TinyModel(nn.Module):
    """The smallest model mmengine's Runner trains (``train_step`` from
    BaseModel)."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 1)
        self.bn = nn.BatchNorm1d(1)

    def forward(self, inputs, labels, mode='loss'):
        out = self.bn(self.linear(inputs))
        return {'loss': ((out - labels) ** 2).mean()}


def _runner(work_dir, max_iters, resume=False, load_from=None):
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    class Model(BaseModel):
        def __init__(self):
            super().__init__()
            self.net = _TinyModel()

        def forward(self, inputs, labels, mode='loss'):
            return self.net(inputs, labels, mode)

    gen = torch.Generator().manual_seed(0)
    data = [dict(inputs=torch.randn(4, generator=gen),
                 labels=torch.randn(1, generator=gen)) for _ in range(8)]
    return Runner(
        model=Model(), work_dir=str(work_dir),
        train_dataloader=dict(dataset=data, batch_size=2,
                              sampler=dict(type='DefaultSampler',
                                           shuffle=False),
                              collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1,
                                          momentum=0.9)),
        param_scheduler=dict(type='MultiStepLR', milestones=[1],
                             by_epoch=False),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook',
                                           interval=2, by_epoch=False)),
        resume=resume, load_from=load_from, experiment_name=f'exp{max_iters}'
        f'{int(resume)}', default_scope='mmseg')


def test_mmengines_own_checkpoints_load_and_resume(tmp_path):
    """A checkpoint mmengine's Runner writes holds objects (its message
    hub's history buffers) that torch's default weights-only load refuses;
    the project's loader, which importing repvgg_seg gives mmengine, reads
    it, and a resume gets the iteration, the optimizer momentum and the
    message hub back."""
    import repvgg_seg  # noqa: F401  (installs the safe loader)
    runner = _runner(tmp_path, max_iters=2)
    runner.train()
    ckpt = osp.join(tmp_path, 'iter_2.pth')
    assert osp.isfile(ckpt)
    momentum = {k: v['momentum_buffer'].clone() for k, v in
                runner.optim_wrapper.optimizer.state_dict()['state'].items()}

    with pytest.raises(pickle.UnpicklingError, match=(
            r'(?s)Weights only load failed.*Unsupported global: GLOBAL '
            r'mmengine\.logging\.history_buffer\.HistoryBuffer')):
        torch.load(ckpt)
    assert load_checkpoint_file(ckpt)['meta']['iter'] == 2
    resumed = _runner(tmp_path, max_iters=4, resume=True, load_from=ckpt)
    resumed.load_or_resume()
    assert resumed.iter == 2
    state = resumed.optim_wrapper.optimizer.state_dict()['state']
    for key, value in momentum.items():
        assert torch.equal(state[key]['momentum_buffer'], value)
    assert len(resumed.message_hub.get_scalar('train/loss').data[0]) == 2
