"""The environment and the safe-loading foundation."""
import os.path as osp
import pickle

import pytest
import torch
import torch.nn as nn


def test_stack_imports_and_registry():
    import mmcv
    import mmcv.ops  # noqa: F401  (compiled ops are required by mmseg)
    import mmseg.models  # noqa: F401
    from mmseg.registry import HOOKS, MODELS

    import repvgg_seg
    from tests.conftest import REPO

    # mmcv in the range the project documents, which is mmseg 1.2's own
    # (mmseg refuses any other on import)
    from mmengine.utils import digit_version
    from mmseg import MMCV_MAX, MMCV_MIN
    assert (MMCV_MIN, MMCV_MAX) == ('2.0.0rc4', '2.2.0')
    assert digit_version(MMCV_MIN) <= digit_version(mmcv.__version__) \
        < digit_version(MMCV_MAX)
    with open(osp.join(REPO, 'requirements', 'runtime.txt')) as f:
        assert f'mmcv (>={MMCV_MIN},<{MMCV_MAX})' in f.read()
    # a compiled op runs (mmcv-lite, or a build without ops, fails here):
    # NMS keeps box 0 and the disjoint box 2, drops box 1 (IoU 0.81 with 0)
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.],
                          [20., 20., 30., 30.]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    _, keep = mmcv.ops.nms(boxes, scores, iou_threshold=0.5)
    assert keep.tolist() == [0, 2]
    assert MODELS.get('RepVGG') is repvgg_seg.RepVGG
    assert HOOKS.get('FiniteLossHook') is repvgg_seg.training.FiniteLossHook


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
        param_scheduler=dict(type='MultiStepLR', milestones=[1], by_epoch=False),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook',
                                           interval=2, by_epoch=False)),
        resume=resume, load_from=load_from, experiment_name=f'exp{max_iters}'
        f'{int(resume)}', default_scope='mmseg')


def test_runner_checkpoint_resumes_under_default_torch_loading(tmp_path):
    """2 iterations, checkpoint, resume: the iteration count, optimizer
    momentum and message hub come back, with weights_only loading."""
    import repvgg_seg  # noqa: F401  (installs the safe loader)
    runner = _runner(tmp_path, max_iters=2)
    runner.train()
    ckpt = osp.join(tmp_path, 'iter_2.pth')
    assert osp.isfile(ckpt)
    momentum = {k: v['momentum_buffer'].clone() for k, v in
                runner.optim_wrapper.optimizer.state_dict()['state'].items()}

    # The default loading rule of this torch is weights-only: without the
    # project's allow-list, mmengine's own checkpoint is refused
    for kwargs in ({}, {'weights_only': True}):
        with pytest.raises(pickle.UnpicklingError, match=(
                r'(?s)Weights only load failed.*Unsupported global: GLOBAL '
                r'mmengine\.logging\.history_buffer\.HistoryBuffer')):
            torch.load(ckpt, **kwargs)
    resumed = _runner(tmp_path, max_iters=4, resume=True, load_from=ckpt)
    resumed.load_or_resume()
    assert resumed.iter == 2
    state = resumed.optim_wrapper.optimizer.state_dict()['state']
    for key, value in momentum.items():
        assert torch.equal(state[key]['momentum_buffer'], value)
    assert len(resumed.message_hub.get_scalar('train/loss').data[0]) == 2
    # the LR schedule came back too: past the milestone, 0.1 -> 0.01
    assert resumed.optim_wrapper.get_lr()['lr'] == [pytest.approx(0.01)]
    resumed.train()
    assert resumed.iter == 4
