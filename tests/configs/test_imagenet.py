"""ImageNet classification configs (the paper's Tables 4 and 5) on this
project's RepVGG backbone, and the hand-off of their checkpoints to the
segmentation configs."""
import copy
import glob
import math
import os.path as osp
from collections import OrderedDict

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from torch.nn.modules.batchnorm import _BatchNorm

from repvgg_seg.models import QARepVGGBlock, RepVGG, RepVGGBlock
from repvgg_seg.config import load_config
from repvgg_seg.runs import build_runner, setup_train_cfg
from tests.conftest import DEMO_CONFIG, REPO
from tests.helpers import (captured_log, randomize_bn, relative_error,
                           seg_batch)

# the Runner of the hand-off sets mmengine's default scope to 'mmpretrain';
# the other test modules expect theirs
pytestmark = pytest.mark.usefixtures('restore_default_scope')

CFG_DIR = osp.join(REPO, 'configs', 'imagenet')
ARCHS = ('a0', 'a1', 'a2', 'b0', 'b1', 'b1g2', 'b1g4', 'b2', 'b2g2', 'b2g4',
         'b3', 'b3g2', 'b3g4')
ARCHS_200E = ('b2', 'b2g2', 'b2g4', 'b3', 'b3g2', 'b3g4')
CONFIGS = sorted(glob.glob(osp.join(CFG_DIR, 'repvgg_*.py')))
# the QARepVGG block's configs: the RepVGG 120-epoch ones but the block
QA_CONFIGS = sorted(glob.glob(osp.join(CFG_DIR, 'qarepvgg_*.py')))
CLASSES = ('n01440764', 'n01443537')  # two wnids: a tiny ImageNet


def _name(path):
    return osp.splitext(osp.basename(path))[0]


@pytest.fixture(scope='module')
def tiny_imagenet(tmp_path_factory):
    """train/ and val/ by class folder, 3 and 1 small PNGs per class."""
    root = tmp_path_factory.mktemp('imagenet')
    rng = np.random.default_rng(0)
    for split, count in (('train', 3), ('val', 1)):
        for cls in CLASSES:
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(count):
                img = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
                assert cv2.imwrite(str(folder / f'{cls}_{i}.png'), img)
    return str(root)


def _build_classifier(model_cfg, meta=False):
    from mmpretrain.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        if meta:
            with torch.device('meta'):
                return MODELS.build(copy.deepcopy(model_cfg))
        return MODELS.build(copy.deepcopy(model_cfg))


def _param_groups(cfg, model):
    """name -> the param group mmengine's optim wrapper constructor builds
    for that parameter (with paramwise_cfg: one group per parameter)."""
    from mmengine.optim import build_optim_wrapper
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        wrapper = build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))
    by_id = {id(p): n for n, p in model.named_parameters()}
    groups = {}
    for group in wrapper.optimizer.param_groups:
        assert len(group['params']) == 1
        groups[by_id[id(group['params'][0])]] = group
    assert len(groups) == len(by_id)
    return wrapper, groups


def _lr_curve(cfg, epoch_length):
    """The LR of every iteration, as the Runner builds the schedulers."""
    from mmengine.optim import OptimWrapper
    from mmengine.registry import PARAM_SCHEDULERS
    param = torch.nn.Parameter(torch.zeros(1))
    optim = OptimWrapper(torch.optim.SGD(
        [param], lr=cfg.optim_wrapper.optimizer.lr))
    schedulers = []
    for sched in copy.deepcopy(cfg.param_scheduler):
        assert sched.pop('convert_to_iter_based') is True
        cls = PARAM_SCHEDULERS.get(sched.pop('type'))
        schedulers.append(cls.build_iter_from_epoch(
            optim, **sched, epoch_length=epoch_length))
    lrs = []
    for _ in range(cfg.train_cfg.max_epochs * epoch_length):
        lrs.append(optim.param_groups[0]['lr'])
        optim.step()  # (a no-op, but the scheduler wants one first)
        for s in schedulers:
            s.step()
    return lrs


# ---------------------------------------------------------------------------
# every config builds

def test_every_arch_has_its_configs():
    names = {_name(p) for p in CONFIGS}
    assert names == ({f'repvgg_{a}_120e' for a in ARCHS}
                     | {f'repvgg_{a}_200e' for a in ARCHS_200E})


@pytest.fixture(scope='module')
def built_dataset(tiny_imagenet):
    """``built_dataset(dataset_cfg)``: what a data set config gives on the
    tiny ImageNet (its length and first sample), built once per distinct
    config whatever the order of the tests."""
    from mmpretrain.registry import DATASETS
    cache = {}

    def build(dataset_cfg):
        key = repr(dataset_cfg)
        if key not in cache:
            dataset_cfg = copy.deepcopy(dataset_cfg)
            dataset_cfg.data_root = tiny_imagenet
            dataset_cfg.metainfo = dict(classes=CLASSES)
            with DefaultScope.overwrite_default_scope('mmpretrain'):
                dataset = DATASETS.build(dataset_cfg)
                cache[key] = (len(dataset), dataset[0])
        return cache[key]
    return build


def test_every_qa_arch_has_its_config():
    assert {_name(p) for p in QA_CONFIGS} == {f'qarepvgg_{a}_120e'
                                              for a in ARCHS}


@pytest.mark.parametrize('path', CONFIGS + QA_CONFIGS, ids=_name)
def test_config_builds(path, built_dataset):
    from mmpretrain.models.backbones import RepVGG as MMPretrainRepVGG
    cfg = load_config(path)
    assert cfg.default_scope == 'mmpretrain'
    assert cfg.custom_imports.imports == ['repvgg_seg']
    block, arch = _name(path).split('_')[:2]
    model = _build_classifier(cfg.model, meta=True)
    # this project's backbone, not mmpretrain's RepVGG
    assert type(model.backbone) is RepVGG
    assert not isinstance(model.backbone, MMPretrainRepVGG)
    assert model.backbone.arch_name.lower() == arch
    assert model.backbone.out_indices == (4, )
    assert all(type(b) is {'repvgg': RepVGGBlock,
                           'qarepvgg': QARepVGGBlock}[block]
               for _, b in model.backbone.blocks())
    assert model.head.fc.in_features == model.backbone.out_channels[4]
    assert model.head.fc.out_features == 1000
    assert all(k.startswith(('backbone.stage', 'head.fc.'))
               for k in model.state_dict())
    if block == 'qarepvgg':  # the same model but the block, same recipe
        ref = load_config(path.replace('qarepvgg_', 'repvgg_'))
        assert cfg.model.backbone.block == 'qarepvgg'
        ref.model.backbone.block = 'qarepvgg'
        assert cfg.model == ref.model
        for key in ('optim_wrapper', 'param_scheduler', 'train_cfg',
                    'train_dataloader', 'custom_imports', 'default_scope'):
            assert cfg[key] == ref[key], key

    # the train and val pipelines (mmpretrain TRANSFORMS) on a tiny ImageNet
    from mmengine.dataset import Compose
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        for loader, split, size in (('train_dataloader', 'train', 6),
                                    ('val_dataloader', 'val', 2),
                                    ('test_dataloader', 'val', 2)):
            dataset_cfg = copy.deepcopy(cfg[loader].dataset)
            assert dataset_cfg.type == 'ImageNet'
            assert dataset_cfg.split == split
            assert dataset_cfg.data_root == 'data/imagenet'
            pipeline = Compose(dataset_cfg.pipeline)
            assert len(pipeline.transforms) == len(dataset_cfg.pipeline)
            length, sample = built_dataset(dataset_cfg)
            assert length == size
            assert tuple(sample['inputs'].shape) == (3, 224, 224)
            assert int(sample['data_samples'].gt_label) in (0, 1)


# ---------------------------------------------------------------------------
# the recipes

def _types(pipeline):
    return [t.type for t in pipeline]


def _check_weight_decay(model, groups):
    norm_params = {f'{m_name}.{p_name}' if m_name else p_name
                   for m_name, m in model.named_modules()
                   if isinstance(m, _BatchNorm)
                   for p_name, _ in m.named_parameters(recurse=False)}
    assert any('rbr_identity' in n for n in norm_params)
    decayed = set()
    for name, group in groups.items():
        assert group['lr'] == 0.1 and group['momentum'] == 0.9
        if name in norm_params or name.endswith('.bias'):
            assert group['weight_decay'] == 0.0, name
        else:
            assert name.endswith('.weight') and group['weight_decay'] == 1e-4
            decayed.add(name)
    # exactly the conv kernels and the linear weight are decayed
    kernels = {f'{n}.weight' for n, m in model.named_modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))}
    assert decayed == kernels
    for name in ('backbone.stage1.1.rbr_identity.weight',
                 'backbone.stage1.1.rbr_identity.bias',
                 'backbone.stage0.rbr_dense.bn.weight', 'head.fc.bias'):
        assert groups[name]['weight_decay'] == 0.0, name
    for name in ('backbone.stage0.rbr_dense.conv.weight',
                 'backbone.stage1.1.rbr_1x1.conv.weight', 'head.fc.weight'):
        assert groups[name]['weight_decay'] == 1e-4, name


def _check_common(cfg):
    # global batch 256 = 32 per GPU x 8 GPUs
    assert cfg.train_dataloader.batch_size * 8 == 256
    assert cfg.auto_scale_lr.base_batch_size == 256
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, opt.momentum, opt.weight_decay) == (
        'SGD', 0.1, 0.9, 1e-4)
    assert cfg.optim_wrapper.paramwise_cfg == dict(norm_decay_mult=0.0,
                                                   bias_decay_mult=0.0)
    train = cfg.train_dataloader.dataset.pipeline
    assert train[1].type == 'RandomResizedCrop' and train[1].scale == 224
    assert train[2].type == 'RandomFlip' and train[2].prob == 0.5
    assert train[2].direction == 'horizontal'
    for loader in ('val_dataloader', 'test_dataloader'):
        test = cfg[loader].dataset.pipeline
        assert _types(test) == ['LoadImageFromFile', 'ResizeEdge',
                                'CenterCrop', 'PackInputs']
        assert (test[1].scale, test[1].edge) == (256, 'short')
        assert test[2].crop_size == 224
    for evaluator in (cfg.val_evaluator, cfg.test_evaluator):
        assert evaluator == dict(type='Accuracy', topk=(1, 5))


def test_recipe_120e():
    cfg = load_config(osp.join(CFG_DIR, 'repvgg_a0_120e.py'))
    _check_common(cfg)
    assert cfg.train_cfg.max_epochs == 120
    assert _types(cfg.train_dataloader.dataset.pipeline) == [
        'LoadImageFromFile', 'RandomResizedCrop', 'RandomFlip', 'PackInputs']
    assert cfg.model.head.loss.type == 'CrossEntropyLoss'
    assert 'train_cfg' not in cfg.model  # no mixup
    # cosine from 0.1 to 0 over 120 epochs, per iteration, no warm-up
    assert len(cfg.param_scheduler) == 1
    lrs = _lr_curve(cfg, epoch_length=3)
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[len(lrs) // 2] == pytest.approx(0.05)
    assert lrs[-1] == pytest.approx(0.1 * (1 + math.cos(
        math.pi * (len(lrs) - 1) / len(lrs))) / 2)
    assert all(a > b for a, b in zip(lrs, lrs[1:]))

    model = _build_classifier(cfg.model)
    assert model.data_preprocessor.batch_augments is None
    _, groups = _param_groups(cfg, model)
    _check_weight_decay(model, groups)


def test_recipe_200e():
    from mmpretrain.models.utils.batch_augments import Mixup
    cfg = load_config(osp.join(CFG_DIR, 'repvgg_b2g4_200e.py'))
    _check_common(cfg)
    assert cfg.train_cfg.max_epochs == 200
    train = cfg.train_dataloader.dataset.pipeline
    assert _types(train) == ['LoadImageFromFile', 'RandomResizedCrop',
                             'RandomFlip', 'AutoAugment', 'PackInputs']
    assert train[3].policies == 'imagenet'
    assert cfg.model.head.loss == dict(
        type='LabelSmoothLoss', label_smooth_val=0.1, mode='original',
        loss_weight=1.0)
    assert cfg.model.train_cfg == dict(augments=dict(type='Mixup',
                                                     alpha=0.2))
    # 5-epoch linear warm-up, then cosine to 0 at epoch 200
    lrs = _lr_curve(cfg, epoch_length=2)
    assert lrs[0] == pytest.approx(1e-4)
    assert all(a < b for a, b in zip(lrs[:9], lrs[1:10]))
    assert lrs[9] == lrs[10] == pytest.approx(0.1)  # epoch 5 starts at 0.1
    assert all(a > b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[10 + 195] == pytest.approx(0.05)
    assert lrs[-1] < 1e-5

    model = _build_classifier(cfg.model, meta=True)
    assert model.head.fc.in_features == 2560
    augments = model.data_preprocessor.batch_augments.augments
    assert len(augments) == 1 and isinstance(augments[0], Mixup)
    assert augments[0].alpha == 0.2
    assert model.data_preprocessor.to_onehot
    assert model.head.loss_module.label_smooth_val == 0.1
    _, groups = _param_groups(cfg, model)
    _check_weight_decay(model, groups)
    # the Table 5 settings hold for every 200-epoch config
    for arch in ARCHS_200E:
        other = load_config(osp.join(CFG_DIR, f'repvgg_{arch}_200e.py'))
        for key in ('param_scheduler', 'optim_wrapper', 'train_cfg'):
            assert other[key] == cfg[key], (arch, key)
        assert other.model.train_cfg == cfg.model.train_cfg
        assert other.model.head.loss == cfg.model.head.loss
        assert (other.train_dataloader.dataset.pipeline ==
                cfg.train_dataloader.dataset.pipeline)


# ---------------------------------------------------------------------------
# hand-off: an ImageNet checkpoint of this project initialises PSPNet

def test_classifier_checkpoint_initialises_pspnet(tiny_imagenet, tmp_path):
    from mmengine.optim import OptimWrapper
    from mmseg.registry import MODELS as SEG_MODELS

    # 1. 3 iterations of classification training, as tools/train.py runs it
    options = {
        'train_dataloader.batch_size': 2,
        'train_dataloader.num_workers': 0,
        'train_dataloader.persistent_workers': False,
        'train_dataloader.pin_memory': False,
        'train_dataloader.dataset.data_root': tiny_imagenet,
        'train_dataloader.dataset.metainfo': dict(classes=CLASSES),
        'train_dataloader.dataset.pipeline.1.scale': 64,
        'model.head.num_classes': 2,
        'model.data_preprocessor.num_classes': 2,
        'train_cfg.max_epochs': 1,  # 6 images / batch 2 = 3 iterations
        'val_dataloader': None, 'val_cfg': None, 'val_evaluator': None,
        'default_hooks.logger.interval': 1,
        'env_cfg.cudnn_benchmark': False,
        'randomness.seed': 0,
    }
    cfg = setup_train_cfg(osp.join(CFG_DIR, 'repvgg_a0_120e.py'),
                          work_dir=str(tmp_path / 'cls'),
                          cfg_options=options)
    runner = build_runner(cfg)
    runner.train()
    assert runner.iter == 3
    # the crash-safe training hooks run in the mmpretrain scope too
    assert {'RandomStateHook', 'SignalCheckpointHook', 'FiniteLossHook',
            'CheckpointFitHook'} <= {type(h).__name__ for h in runner.hooks}
    assert type(runner.train_loop).__name__ == 'ResumableEpochBasedTrainLoop'
    classifier = runner.model
    assert type(classifier.backbone) is RepVGG
    ckpt = tmp_path / 'cls' / 'epoch_1.pth'
    assert ckpt.is_file()
    cls_state = OrderedDict(
        (k, v) for k, v in classifier.state_dict().items()
        if k.startswith('backbone.'))

    # 2. PSPNet (the demo config, BN) initialised from that checkpoint
    seg_cfg = Config.fromfile(DEMO_CONFIG)
    seg_cfg.model.backbone.init_cfg = dict(type='Pretrained',
                                           checkpoint=str(ckpt))
    seg_cfg.model.data_preprocessor.size = (64, 64)
    with DefaultScope.overwrite_default_scope('mmseg'):
        segmentor = SEG_MODELS.build(seg_cfg.model)
        with captured_log() as handler:
            segmentor.init_weights()
    assert type(segmentor.backbone) is RepVGG
    assert segmentor.backbone.arch_name == 'A0'
    seg_state = segmentor.backbone.state_dict()
    assert len(seg_state) == len(cls_state)
    for key, value in cls_state.items():
        assert torch.equal(seg_state[key[len('backbone.'):]], value), key
    assert any('ignored 2 keys of head' in m for m in handler.messages), \
        handler.messages
    assert any('loaded RepVGG-A0 backbone weights' in m
               for m in handler.messages)

    # 3. one training step of the segmentor
    data = seg_batch()
    optim = OptimWrapper(torch.optim.SGD(segmentor.parameters(), lr=0.01))
    segmentor.train()
    with DefaultScope.overwrite_default_scope('mmseg'):
        log_vars = segmentor.train_step(data, optim)
    assert math.isfinite(float(torch.as_tensor(log_vars['loss']).detach()))
    assert not torch.equal(segmentor.backbone.stage0.rbr_dense.conv.weight,
                           cls_state['backbone.stage0.rbr_dense.conv.weight'])


# ---------------------------------------------------------------------------
# deployment of the classifier

def test_fused_classifier_gives_the_same_logits():
    from repvgg_seg.models import fuse_for_deploy
    cfg = load_config(osp.join(CFG_DIR, 'repvgg_a0_120e.py'))
    torch.manual_seed(0)
    model = _build_classifier(cfg.model)
    model.init_weights()
    randomize_bn(model, seed=1)
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = model(x, mode='tensor')
    report = fuse_for_deploy(model, verify=True, input_shape=(2, 3, 64, 64),
                             tolerance=1e-5)
    assert report['converted'] == 22  # the 22 blocks of A0
    assert model.backbone.deploy
    assert not any(isinstance(m, _BatchNorm) for m in model.modules())
    with torch.no_grad():
        after = model(x, mode='tensor')
    assert before.shape == (2, 1000)
    assert relative_error(before, after) < 1e-5


# ---------------------------------------------------------------------------
# tools/prepare_imagenet.py

def test_prepare_imagenet(tiny_imagenet, tmp_path, capsys):
    """The layout check, through the tool as a user runs it: problems are
    one ``error:`` report on stderr with exit status 2, as every tool's."""
    import shutil

    from tests.helpers import run_tool

    def prepare(*args):
        code, err = run_tool('prepare_imagenet', *args, capsys=capsys)
        return code, err

    assert run_tool('prepare_imagenet', tiny_imagenet, '--classes', '2')[0] \
        == 0
    assert 'layout OK' in capsys.readouterr().out
    code, err = prepare(tiny_imagenet)  # 2 classes, not 1000
    assert code == 2 and 'error: 1 problem(s) in ' in err
    assert 'has 2 class folders, expected 1000' in err

    # a flat val/ with a label file, installed as meta/val.txt
    root = tmp_path / 'flat'
    shutil.copytree(osp.join(tiny_imagenet, 'train'), root / 'train')
    (root / 'val').mkdir()
    for i, cls in enumerate(CLASSES):
        shutil.copy(osp.join(tiny_imagenet, 'val', cls, f'{cls}_0.png'),
                    root / 'val' / f'v{i}.png')
    code, err = prepare(str(root), '--classes', '2')
    assert code == 2 and '--val-ann' in err
    ann = tmp_path / 'val_labels.txt'
    ann.write_text('v0.png 0\nv1.png 7\n')
    code, err = prepare(str(root), '--classes', '2', '--val-ann', str(ann))
    assert code == 2 and 'out of range' in err
    ann.write_text('v0.png 0\nv1.png 1\n')
    assert prepare(str(root), '--classes', '2', '--val-ann',
                   str(ann))[0] == 0
    assert (root / 'meta' / 'val.txt').read_text() == ann.read_text()
    assert prepare(str(root), '--classes', '2')[0] == 0


def test_prepare_imagenet_reports_problems_as_every_tool_does(tmp_path,
                                                             capsys):
    """One ``error:`` report listing the problems, exit status 2; with
    ``--classes`` that fits, the layout's counts on stdout."""
    from tests.helpers import error_report, run_tool
    root = tmp_path / 'imagenet'
    for split in ('train', 'val'):
        for wnid in ('n01', 'n02'):
            (root / split / wnid).mkdir(parents=True)
            (root / split / wnid / f'{wnid}_0.png').write_bytes(b'')
    code, err = run_tool('prepare_imagenet', str(root), capsys=capsys)
    assert code == 2
    assert error_report(err).startswith(
        f'error: 1 problem(s) in {root}:\n- {root}/train has 2 class '
        'folders, expected 1000\n')
    code, _ = run_tool('prepare_imagenet', str(root), '--classes', '2')
    assert code == 0
    assert capsys.readouterr().out.splitlines() == [
        'train: 2 classes, 2 images', 'val: by class folder, 2 images',
        'layout OK']
