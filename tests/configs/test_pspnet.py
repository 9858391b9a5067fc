"""PSPNet configs (Table 8 and the rest), the metric path, train/test."""
import copy
import glob
import json
import math
import os.path as osp

import numpy as np
import pytest
import torch
import torch.nn as nn

from repvgg_seg.config import load_config
from repvgg_seg.runs import build_runner, setup_test_cfg, setup_train_cfg
from tests.conftest import DEMO_CONFIG as DEMO
from tests.conftest import REPO, TINY_OPTIONS
from tests.helpers import run_tool

SEG_CONFIGS = sorted(
    p for p in glob.glob(osp.join(REPO, 'configs', '**', '*.py'),
                         recursive=True)
    if '_base_' not in p and osp.sep + 'imagenet' + osp.sep not in p)
TABLE8 = {'pspnet_repvgg_b1g2_fast': ('B1g2', 'fast', 5),
          'pspnet_repvgg_b1g2': ('B1g2', 'last_two_stages', 17),
          'pspnet_repvgg_b2_fast': ('B2', 'fast', 5),
          'pspnet_repvgg_b2': ('B2', 'last_two_stages', 17)}


def _name(path):
    return osp.splitext(osp.basename(path))[0]


def _meta_model(cfg):
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules
    register_all_modules()  # mmseg's default scope, whatever ran before
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.backbone.init_cfg = None
    with torch.device('meta'):
        return MODELS.build(model_cfg)


def test_every_seg_config_is_found():
    names = {_name(p) for p in SEG_CONFIGS}
    assert set(TABLE8) | {'pspnet_r50', 'pspnet_r101'} <= names
    assert len([n for n in names if n.startswith('pspnet_repvgg_')
                and 'synthetic' not in n]) == 26


@pytest.mark.parametrize('path', SEG_CONFIGS, ids=_name)
def test_config_builds_model_and_pipelines(path, synthetic_root):
    from mmseg.registry import DATASETS
    from mmseg.utils import register_all_modules
    register_all_modules()
    cfg = load_config(path)
    model = _meta_model(cfg)
    backbone = model.backbone
    # heads are wired to the right stages with the right widths
    if hasattr(backbone, 'out_channels'):
        widths = [backbone.out_channels[i] for i in backbone.out_indices]
        assert cfg.model.decode_head.in_channels == widths[
            cfg.model.decode_head.in_index]
        assert cfg.model.auxiliary_head.in_channels == widths[
            cfg.model.auxiliary_head.in_index]
    seen = set()
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        dataset_cfg = copy.deepcopy(cfg[loader].dataset)
        dataset_cfg.data_root = synthetic_root
        dataset = DATASETS.build(dataset_cfg)
        assert len(dataset) == (6 if loader == 'train_dataloader' else 2)
        key = repr(dataset_cfg.pipeline)
        if key not in seen:  # one sample per distinct pipeline is enough
            seen.add(key)
            sample = dataset[0]
            assert sample['inputs'].shape[0] == 3
            labels = sample['data_samples'].gt_sem_seg.data.unique()
            assert set(labels.tolist()) <= set(range(19)) | {255}


@pytest.mark.parametrize('block', ['repvgg', 'qarepvgg'])
@pytest.mark.parametrize('name', sorted(TABLE8))
def test_table8_configs(name, block, restore_default_scope):
    """The Table 8 configs, and their QARepVGG twins
    (``pspnet_qarepvgg_*``: the same recipe, the other block)."""
    from repvgg_seg.models import QARepVGGBlock, RepVGGBlock
    arch, mode, dilated = TABLE8[name]
    cfg = load_config(osp.join(REPO, 'configs',
                               name.replace('repvgg', block) + '.py'))
    backbone_cfg = cfg.model.backbone
    assert (backbone_cfg.arch, backbone_cfg.dilation,
            backbone_cfg.get('block', 'repvgg')) == (arch, mode, block)
    assert backbone_cfg.init_cfg.checkpoint == \
        f'checkpoints/{"QARepVGG" if block == "qarepvgg" else "RepVGG"}-' \
        f'{arch}-train.pth'
    assert backbone_cfg.norm_cfg.type == 'SyncBN'
    model = _meta_model(cfg)
    assert all(type(b) is {'repvgg': RepVGGBlock,
                           'qarepvgg': QARepVGGBlock}[block]
               for _, b in model.backbone.blocks())
    convs = [m for m in model.backbone.modules()
             if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert sum(m.dilation != (1, 1) for m in convs) == dilated
    with torch.device('meta'):
        feats = model.backbone(torch.empty(1, 3, 713, 713))
    # output stride 8 for the last two stages (713 -> 90 with padding)
    assert [f.shape[-1] for f in feats] == [179, 90, 90, 90]
    widths = [model.backbone.out_channels[i]
              for i in model.backbone.out_indices]
    assert cfg.model.decode_head.in_channels == widths[3]
    assert cfg.model.auxiliary_head.in_channels == widths[2]
    if block == 'qarepvgg':  # the recipe is the RepVGG one
        ref = load_config(osp.join(REPO, 'configs', name + '.py'))
        for key in ('optim_wrapper', 'param_scheduler', 'train_cfg',
                    'train_dataloader'):
            assert cfg[key] == ref[key], key
    head, aux = cfg.model.decode_head, cfg.model.auxiliary_head
    assert head.type == 'PSPHead' and head.pool_scales == (1, 2, 3, 6)
    assert head.in_index == 3 and model.backbone.out_indices[3] == 4
    # the auxiliary FCN head reads stage 3, with loss weight 0.4
    assert aux.type == 'FCNHead' and model.backbone.out_indices[
        aux.in_index] == 3
    assert aux.loss_decode.loss_weight == 0.4
    # the recipe
    optimizer = cfg.optim_wrapper.optimizer
    assert (optimizer.type, optimizer.lr, optimizer.momentum,
            optimizer.weight_decay) == ('SGD', 0.01, 0.9, 1e-4)
    (poly,) = cfg.param_scheduler
    assert (poly.type, poly.power, poly.eta_min, poly.end) == ('PolyLR', 0.9,
                                                               0.0, 40)
    assert poly.by_epoch and poly.convert_to_iter_based
    assert cfg.train_cfg.type == 'ResumableEpochBasedTrainLoop'
    assert cfg.train_cfg.max_epochs == 40
    # global batch 16 = 2 per GPU x 8 GPUs; 40 epochs of 2975 images
    assert cfg.train_dataloader.batch_size * 8 == 16
    # 7440 iterations (the paper's schedule) from the config's own values
    global_batch = cfg.train_dataloader.batch_size * 8
    assert not cfg.train_dataloader.get('drop_last', False)
    assert math.ceil(2975 / global_batch) * cfg.train_cfg.max_epochs == 7440
    crop = [t for t in cfg.train_dataloader.dataset.pipeline
            if t.type == 'RandomCrop'][0]
    assert crop.crop_size == (713, 713)
    resize = [t for t in cfg.train_dataloader.dataset.pipeline
              if t.type == 'RandomResize'][0]
    assert resize.scale == (2048, 1024) and resize.ratio_range == (0.5, 2.0)
    assert {'RandomFlip', 'PhotoMetricDistortion'} <= {
        t.type for t in cfg.train_dataloader.dataset.pipeline}
    assert cfg.model.test_cfg == dict(mode='slide', crop_size=(713, 713),
                                      stride=(476, 476))
    # the built heads ignore 255 (mmseg's default, which the configs keep)
    assert model.decode_head.ignore_index == 255
    assert model.auxiliary_head.ignore_index == 255
    assert model.decode_head.num_classes == 19


# Every Table 8 config and its twins: the RepVGG archs, QARepVGG, ResNet.
TABLE8_FILES = sorted(glob.glob(osp.join(REPO, 'configs', 'pspnet_*.py')))


def _two_crops():
    """A batch of two crops smaller than 713x713 in different ways (what
    RandomCrop gives from images resized below it), with their labels."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    gen = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for h, w in ((600, 700), (713, 500)):
        inputs.append(torch.randint(0, 256, (3, h, w), dtype=torch.uint8,
                                    generator=gen))
        sample = SegDataSample(metainfo=dict(img_shape=(h, w),
                                             ori_shape=(h, w)))
        sample.gt_sem_seg = PixelData(data=torch.randint(
            0, 19, (1, h, w), generator=gen))
        samples.append(sample)
    return inputs, samples


def test_table8_batches_are_padded_to_the_crop():
    """As in mmseg's configs, the data preprocessor pads every training
    batch to the 713x713 crop (one shape for cudnn_benchmark; without a
    size mmseg's cannot stack a training batch at all); the demo keeps its
    own 256x256."""
    from mmengine.config import Config
    from mmseg.models import SegDataPreProcessor
    assert len(TABLE8_FILES) == 32
    for path in TABLE8_FILES:
        cfg = Config.fromfile(path)
        crop = [t for t in cfg.train_dataloader.dataset.pipeline
                if t.type == 'RandomCrop'][0].crop_size
        assert cfg.model.data_preprocessor.size == crop == (713, 713), path
    assert Config.fromfile(DEMO).model.data_preprocessor.size == (256, 256)
    pre_cfg = dict(Config.fromfile(TABLE8_FILES[0]).model.data_preprocessor)
    assert pre_cfg.pop('type') == 'SegDataPreProcessor'
    preprocessor = SegDataPreProcessor(**pre_cfg)
    inputs, samples = _two_crops()
    out = preprocessor(dict(inputs=inputs, data_samples=samples),
                       training=True)
    assert out['inputs'].shape == (2, 3, 713, 713)
    mean = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)
    for image, sample, batch_image in zip(inputs, out['data_samples'],
                                          out['inputs']):
        h, w = image.shape[1:]
        # the crop at the top left, RGB and normalized; zeros around it
        torch.testing.assert_close(batch_image[:, :h, :w],
                                   (image.flip(0).float() - mean) / std)
        assert batch_image[:, h:].abs().sum() == 0
        assert batch_image[:, :, w:].abs().sum() == 0
        gt = sample.gt_sem_seg.data
        assert gt.shape == (1, 713, 713)
        assert (gt[:, h:] == 255).all() and (gt[:, :, w:] == 255).all()
        assert sample.pad_shape == (713, 713)
    # the labels themselves unchanged under the padding
    for sample, original in zip(out['data_samples'], _two_crops()[1]):
        h, w = original.gt_sem_seg.shape
        torch.testing.assert_close(sample.gt_sem_seg.data[:, :h, :w],
                                   original.gt_sem_seg.data)


def test_resnet_baselines_share_the_recipe():
    r50 = load_config(osp.join(REPO, 'configs', 'pspnet_r50.py'))
    r101 = load_config(osp.join(REPO, 'configs', 'pspnet_r101.py'))
    b1g2 = load_config(osp.join(REPO, 'configs', 'pspnet_repvgg_b1g2.py'))
    assert (r50.model.backbone.type, r50.model.backbone.depth) == (
        'ResNetV1c', 50)
    assert r101.model.backbone.depth == 101
    assert r50.model.backbone.dilations == (1, 1, 2, 4)
    for key in ('optim_wrapper', 'param_scheduler', 'train_cfg',
                'train_dataloader'):
        assert r50[key] == b1g2[key] == r101[key]
    assert r50.model.test_cfg == b1g2.model.test_cfg


def test_test_run_scores_known_answers(tiny_trained, tmp_path,
                                       restore_default_scope):
    """The evaluator of a tools/test.py run (the demo's test config through
    setup_test_cfg and the Runner's test loop: IoUMetric over the Cityscapes
    data set's 19 classes, label 255 ignored) on designed predictions: a
    perfect one scores 100, the designed one the values computed by
    hand."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    cfg = setup_test_cfg(DEMO, tiny_trained['checkpoint'],
                         work_dir=str(tmp_path),
                         cfg_options=tiny_trained['options'])
    evaluator = build_runner(cfg).test_loop.evaluator
    assert len(evaluator.dataset_meta['classes']) == 19
    assert [m.ignore_index for m in evaluator.metrics] == [255]

    label = torch.tensor([[0, 0, 1, 1],
                          [0, 0, 1, 1],
                          [2, 2, 2, 255]])
    # class 18 (absent from the label) once on a labelled pixel; class 2 on
    # the ignored one
    designed = torch.tensor([[0, 1, 1, 1],
                             [0, 0, 1, 1],
                             [2, 2, 18, 2]])

    def score(pred):
        sample = SegDataSample(pred_sem_seg=PixelData(data=pred[None]),
                               gt_sem_seg=PixelData(data=label[None]))
        evaluator.process(data_samples=[sample], data_batch={})
        return evaluator.evaluate(1)

    perfect = score(torch.where(label == 255, 0, label))
    assert (perfect['mIoU'], perfect['mAcc'], perfect['aAcc']) == (
        100.0, 100.0, 100.0)
    # by hand, over the 11 labelled pixels: class 0: tp 3, pred 3, gt 4 ->
    # IoU 3/4, acc 3/4; class 1: tp 4, pred 5, gt 4 -> 4/5, 1; class 2:
    # tp 2, pred 2 (the third is on the ignored pixel), gt 3 -> 2/3, 2/3;
    # class 18: pred 1, gt 0 -> IoU 0, acc undefined; 15 classes absent
    result = score(designed)
    assert result['mIoU'] == pytest.approx(
        round((3 / 4 + 4 / 5 + 2 / 3 + 0) / 4 * 100, 2), abs=1e-4)
    assert result['mAcc'] == pytest.approx(
        round((3 / 4 + 1 + 2 / 3) / 3 * 100, 2), abs=1e-4)
    assert result['aAcc'] == pytest.approx(round(9 / 11 * 100, 2), abs=1e-4)


TINY = TINY_OPTIONS


def _run_test_tool(trained, tmp_path, capsys, *extra, config=None,
                   checkpoint=None, name='metrics'):
    out = tmp_path / f'{name}.json'
    args = [config or trained['config'], checkpoint or trained['checkpoint'],
            '--work-dir', str(tmp_path / 'test_work'), '--out-json',
            str(out)] + list(extra) + ['--cfg-options'] + [
                f'{k}={v}' for k, v in trained['options'].items()]
    code, err = run_tool('test', *args, capsys=capsys)
    assert code == 0, err
    return json.loads(out.read_text())


def test_tiny_training_run_learns(tiny_trained):
    losses = np.array(tiny_trained['losses'])
    assert len(losses) == 10 and np.isfinite(losses).all()
    # it learns (seeded and deterministic, so not a flaky comparison)
    assert losses[-3:].mean() < 0.95 * losses[:3].mean()
    assert osp.isfile(tiny_trained['checkpoint'])


def test_test_tool_with_and_without_fuse(tiny_trained, tmp_path, capsys):
    # --fuse evaluates the same function: logits within 1e-4
    from repvgg_seg import fuse_for_deploy
    from repvgg_seg.apis import load_model
    model = load_model(DEMO, tiny_trained['checkpoint'],
                       cfg_options=tiny_trained['options'])
    report = fuse_for_deploy(model, verify=True, input_shape=(1, 3, 96, 192),
                             tolerance=1e-4)
    assert report['max_rel_diff'] < 1e-4
    # the command line, as a user runs it (in-process: same code path)
    unfused = _run_test_tool(tiny_trained, tmp_path, capsys)
    fused = _run_test_tool(tiny_trained, tmp_path, capsys, '--fuse',
                           name='fused')
    assert set(unfused) >= {'mIoU', 'mAcc', 'aAcc'}
    assert 0 < unfused['mIoU'] <= 100
    assert fused['mIoU'] == pytest.approx(unfused['mIoU'], abs=0.01)


def test_deploy_checkpoint_through_a_real_runner(tiny_trained, tmp_path,
                                                 capsys):
    """tools/convert.py, then tools/test.py X_deploy.py X.pth: a real
    Runner builds the deploy config's model, fused by itself (FusedModel),
    loads the fused weights (CheckpointFitHook would refuse them
    otherwise), and the metrics equal the training checkpoint's."""
    out = str(tmp_path / 'tiny.pth')
    code, err = run_tool('convert', DEMO, tiny_trained['checkpoint'], out,
                         '--shape', '64', '64', '--cfg-options', *[
                             f'{k}={v}' for k, v in
                             tiny_trained['options'].items()], capsys=capsys)
    assert code == 0, err
    deploy_cfg = str(tmp_path / 'tiny_deploy.py')
    unfused = _run_test_tool(tiny_trained, tmp_path, capsys)
    deployed = _run_test_tool(tiny_trained, tmp_path, capsys,
                              config=deploy_cfg, checkpoint=out,
                              name='deployed')
    assert deployed['mIoU'] == pytest.approx(unfused['mIoU'], abs=0.01)
    assert deployed['aAcc'] == pytest.approx(unfused['aAcc'], abs=0.01)
    # the deploy weights with the training config: refused in one line
    code, err = run_tool('test', DEMO, out, '--work-dir',
                         str(tmp_path / 'w'), '--cfg-options', *[
                             f'{k}={v}' for k, v in
                             tiny_trained['options'].items()], capsys=capsys)
    assert code == 2 and 'deploy checkpoint' in err


def test_show_dir_writes_one_picture_per_image(tiny_trained, tmp_path,
                                               capsys):
    show = tmp_path / 'show'
    _run_test_tool(tiny_trained, tmp_path, capsys, '--show-dir', str(show))
    pictures = sorted(p for p in show.rglob('*.png'))
    assert len(pictures) == 2  # the two synthetic val images
    import mmcv
    image = mmcv.imread(str(pictures[0]))
    assert image is not None and image.shape[2] == 3


def test_format_only_writes_predictions_and_no_metrics(tiny_trained,
                                                       tmp_path, capsys):
    out_dir = tmp_path / 'submission'
    args = [tiny_trained['config'], tiny_trained['checkpoint'],
            '--work-dir', str(tmp_path / 'w'), '--format-only', '--out-dir',
            str(out_dir), '--cfg-options'] + [
                f'{k}={v}' for k, v in tiny_trained['options'].items()]
    code, err = run_tool('test', *args, capsys=capsys)
    assert code == 0, err
    written = sorted(p.name for p in out_dir.rglob('*.png'))
    assert len(written) == 2
    import mmcv
    pred = mmcv.imread(str(next(out_dir.rglob('*.png'))), flag='unchanged')
    assert pred.ndim == 2 and set(np.unique(pred)) <= set(range(19))


def test_winograd_engine_gives_the_same_metrics(tiny_trained, tmp_path,
                                                capsys):
    # --engine winograd: the fused model with NNPACK convs, same metrics.
    # Untuned, so every eligible conv runs on NNPACK (tuned, direct conv
    # may win every layer of so small a model)
    from repvgg_seg.engines.winograd import WinogradConv2d, nnpack_available
    if not nnpack_available():
        pytest.skip('no NNPACK in this PyTorch build')
    unfused = _run_test_tool(tiny_trained, tmp_path, capsys)
    cfg = setup_test_cfg(DEMO, tiny_trained['checkpoint'],
                         work_dir=str(tmp_path / 'w'),
                         cfg_options=tiny_trained['options'],
                         engine='winograd')
    hook = cfg.custom_hooks[-1]
    assert (hook['type'], hook['engine']) == ('EngineHook', 'winograd')
    hook['tune'] = False
    runner = build_runner(cfg)
    metrics = runner.test()
    # the converted copy the engine runs, one per window shape
    runs = list(runner.model.engine_forward.runners.values())
    convs = [m for m in runs[0].module.modules()
             if isinstance(m, WinogradConv2d)]
    assert convs and all(m.method.startswith('nnpack') for m in convs)
    assert metrics['mIoU'] == pytest.approx(unfused['mIoU'], abs=0.01)


def test_missing_pretrained_checkpoint_is_a_clear_error(tmp_path):
    from mmseg.registry import MODELS
    cfg = load_config(osp.join(REPO, 'configs', 'pspnet_repvgg_a0_fast.py'))
    cfg.model.backbone.norm_cfg = dict(type='BN')
    cfg.model.backbone.init_cfg.checkpoint = str(tmp_path / 'nothing.pth')
    model = MODELS.build(cfg.model.backbone)
    with pytest.raises(FileNotFoundError, match='nothing.pth.*official '
                       'ImageNet checkpoint.*init_cfg=None'):
        model.init_weights()


def test_demo_writes_a_json_summary(tmp_path):
    """``make demo``'s code path (train, test unfused and fused, summary),
    shrunk to 2 iterations on a 4-image data set: the summary is valid JSON
    with plain numbers. Without its INT8 step, whose parts (quantization,
    the INT8 test loop, the predictions picture, the INT8 benchmark rows)
    are tested in tests/quantization/test_quantize.py."""
    from repvgg_seg.demo import run_demo
    options = {k: v for k, v in TINY.items()
               if not k.startswith(('train_cfg', 'param_scheduler',
                                    'default_hooks.checkpoint'))}
    options.pop('train_dataloader.dataset.indices')
    summary = run_demo(work_dir=str(tmp_path / 'work'),
                       data_root=str(tmp_path / 'data'), max_iters=2,
                       synthetic=dict(num_train=2, num_val=2, size=(64, 128)),
                       cfg_options=options, int8=False)
    with open(tmp_path / 'work' / 'summary.json') as f:
        written = json.load(f)
    assert written == summary
    assert written['arch'] == 'A0' and written['iterations'] == 2
    for key in ('mIoU', 'mIoU_fused', 'mAcc', 'aAcc', 'train_seconds'):
        assert type(written[key]) is float
    assert written['mIoU_fused'] == pytest.approx(written['mIoU'], abs=0.01)
    assert not any(k.startswith('int8') or k.endswith('int8')
                   for k in written)


def test_amp_flag_selects_mmengine_amp_wrapper(tmp_path, monkeypatch):
    """``--amp`` on a GPU machine: mmengine's AmpOptimWrapper with dynamic
    loss scaling around the config's optimizer (the device is faked: the
    wrapper is only built on a GPU)."""
    import mmengine.device
    monkeypatch.setattr(mmengine.device, 'get_device', lambda: 'cuda')
    cfg = setup_train_cfg(osp.join(REPO, 'configs', 'pspnet_repvgg_a0.py'),
                          work_dir=str(tmp_path), amp=True, data_check='off')
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.loss_scale == 'dynamic'
    assert cfg.optim_wrapper.optimizer.type == 'SGD'
