"""Backbone generality and weights interop: timm and mmpretrain
checkpoints, the QARepVGG block, per-stage strides/dilations, act_cfg and
list-valued init_cfg.

Tolerances: fused vs unfused and ours vs timm/mmpretrain are compared with
:func:`tests.helpers.relative_error` (max abs difference over max abs
reference) <= 1e-5, on tiny inputs and the big archs at reduced depth
(their full-size keys and shapes on the meta device).
"""
import copy
import dataclasses
import math
import os.path as osp
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn

from repvgg_seg import CheckpointError, ConfigError, reparameterize
from repvgg_seg.models import (BLOCK_TYPES, PAPER_ARCHS, QARepVGGBlock,
                               RepVGG, RepVGGBlock)
from repvgg_seg.models.pretrained import (extract_backbone_state,
                                          match_state_dict)
from repvgg_seg.models.reparam import (BNParams, fuse_block_state_dict,
                                       fuse_qa_branches)
from tests.conftest import REPO
from tests.helpers import (DILATION_DEPTHS, TINY_ARCHS,
                           assert_same_fused_geometry, captured_log,
                           official_state, randomize_bn, reduced_arch,
                           relative_error, seg_batch)
from tests.helpers import load_backbone as _load

TOL = 1e-5


# ---------------------------------------------------------------- timm
# every RepVGG arch timm has, with how its state dict is saved (each format
# once over the big archs; all of them for A0 in a test of its own)
TIMM_ARCHS = {'A0': 'state_dict', 'A1': 'safetensors', 'A2': 'bare',
              'B0': 'state_dict', 'B1': 'safetensors', 'B1g4': 'bare',
              'B2': 'state_dict', 'B2g4': 'safetensors', 'B3': 'bare',
              'B3g4': 'state_dict', 'D2se': 'safetensors'}


def _timm_model(arch, seed=0, num_blocks=None):
    """timm's RepVGG ``arch`` with random weights and BN statistics, in
    eval mode; with ``num_blocks``, its byobnet config at those stage
    depths (widths, groups and SE kept)."""
    import timm
    from timm.models.byobnet import ByobNet, model_cfgs
    torch.manual_seed(seed)
    if num_blocks is None:
        model = timm.create_model(f'repvgg_{arch.lower()}', pretrained=False)
    else:
        cfg = model_cfgs[f'repvgg_{arch.lower()}']
        model = ByobNet(dataclasses.replace(cfg, blocks=tuple(
            dataclasses.replace(stage, d=depth)
            for stage, depth in zip(cfg.blocks, num_blocks))))
    randomize_bn(model, seed=seed)  # random BN statistics and affines
    return model.eval()


def _save(state, path, fmt):
    state = OrderedDict((k, v.detach().contiguous())
                        for k, v in state.items())
    if fmt == 'safetensors':
        from safetensors.torch import save_file
        path = path.with_suffix('.safetensors')
        save_file(state, str(path))
    else:
        torch.save(state if fmt == 'bare' else {'state_dict': state}, path)
    return path


def _assert_fits(state, source='timm', **kwargs):
    """A checkpoint's state dict, as the loader matches it to a RepVGG
    built with ``kwargs`` (renamed, heads dropped, fused on load for
    ``deploy=True``), has the backbone's keys and shapes; on the meta
    device. The loader raises :class:`CheckpointError` where it does not
    fit."""
    with torch.device('meta'):
        backbone = RepVGG(**kwargs)
    renamed, _ = extract_backbone_state(state)
    matched = match_state_dict(backbone, renamed, source)
    assert {k: v.shape for k, v in matched.items()} == {
        k: v.shape for k, v in backbone.state_dict().items()}


@pytest.mark.parametrize('arch', sorted(TIMM_ARCHS))
def test_timm_checkpoint_keys_and_shapes_fit_every_arch(arch):
    """timm's full-size model of every arch (on the meta device): its
    training-time state dict fits our backbone, and into deploy=True too
    (fused on load); its fused one (timm's reparameterize_model) fits our
    deploy backbone, and is refused by a training-time one."""
    import timm
    from timm.utils import reparameterize_model
    with torch.device('meta'):
        theirs = timm.create_model(f'repvgg_{arch.lower()}',
                                   pretrained=False)
    _assert_fits(theirs.state_dict(), arch=arch)
    _assert_fits(theirs.state_dict(), arch=arch, deploy=True)
    with torch.device('meta'):
        reparameterize_model(theirs, inplace=True)
    fused = theirs.state_dict()
    assert any('reparam_conv' in k for k in fused)
    _assert_fits(fused, arch=arch, deploy=True)
    with pytest.raises(CheckpointError, match='fused .deploy. RepVGG'):
        _assert_fits(fused, arch=arch)


@pytest.mark.parametrize('arch', sorted(TIMM_ARCHS))
def test_timm_checkpoint_matches_timm_features(tmp_path, arch):
    """timm's own state dict (random weights and BN statistics) loads via
    init_cfg and gives timm's forward_features, unfused and fused; the
    arch at reduced depth (its widths, groups and SE,
    :func:`tests.helpers.reduced_arch`), in its file format."""
    from timm.utils import reparameterize_model
    fmt = TIMM_ARCHS[arch]
    ours_arch = reduced_arch(arch)
    theirs = _timm_model(arch, num_blocks=ours_arch['num_blocks'])
    x = torch.randn(1, 3, 32, 32)
    path = _save(theirs.state_dict(), tmp_path / f'timm_{arch}.pth', fmt)
    ours = _load(ours_arch, path)
    with torch.no_grad():
        ref = theirs.forward_features(x)
        assert relative_error(ref, ours(x)[0]) <= TOL
    del ours
    path.unlink()

    # timm's fused model (reparam_conv) into deploy=True ...
    theirs = reparameterize_model(theirs, inplace=True)
    assert any('reparam_conv' in k for k in theirs.state_dict())
    path = _save(theirs.state_dict(), tmp_path / f'timm_{arch}_fused.pth',
                 fmt)
    ours = _load(ours_arch, path, deploy=True)
    with torch.no_grad():
        assert relative_error(ref, theirs.forward_features(x)) <= TOL
        assert relative_error(ref, ours(x)[0]) <= TOL


def test_timm_checkpoint_formats_and_head_dropped(tmp_path):
    """A0 from timm: bare, under state_dict and as safetensors; the
    classifier (head.fc) is dropped with the usual log line; a training-time
    timm checkpoint into deploy=True is fused on load."""
    theirs = _timm_model('A0', seed=1)
    x = torch.randn(1, 3, 29, 35)
    with torch.no_grad():
        ref = theirs.forward_features(x)
    for fmt in ('bare', 'state_dict', 'safetensors'):
        path = _save(theirs.state_dict(), tmp_path / f'a0_{fmt}.pth', fmt)
        with captured_log() as log:
            ours = _load('A0', path)
        assert [m for m in log.messages if 'ignored' in m] == [
            f'{path}: ignored 2 keys of head (not part of the backbone)'], \
            log.messages
        with torch.no_grad():
            assert relative_error(ref, ours(x)[0]) <= TOL
    fused = _load('A0', path, deploy=True)
    with torch.no_grad():
        assert relative_error(ref, fused(x)[0]) <= TOL


def test_timm_checkpoint_of_another_arch_names_it(tmp_path):
    from timm.utils import reparameterize_model
    theirs = _timm_model('A1')
    path = _save(theirs.state_dict(), tmp_path / 'timm_a1.pth', 'bare')
    with pytest.raises(CheckpointError) as info:
        _load('A0', path)
    assert 'does not fit RepVGG-A0' in str(info.value)
    assert 'looks like RepVGG-A1 (training-time)' in str(info.value)
    reparameterize_model(theirs, inplace=True)
    path = _save(theirs.state_dict(), tmp_path / 'timm_a1_fused.pth', 'bare')
    with pytest.raises(CheckpointError, match=r'looks like RepVGG-A1 '
                       r'\(deploy\)'):
        _load('A0', path, deploy=True)


def test_mmpretrain_d2se_se_keys(tmp_path):
    """mmpretrain's D2se (SE layers ``se_layer.conv1/conv2``): the
    full-size backbone's state dict fits ours (on the meta device), and at
    reduced depth it loads and computes what mmpretrain's backbone
    computes."""
    from mmengine.registry import DefaultScope
    mmpretrain_models = pytest.importorskip('mmpretrain.models')
    with DefaultScope.overwrite_default_scope('mmpretrain'), \
            torch.device('meta'):
        full = mmpretrain_models.RepVGG(arch='D2se', out_indices=(3,))
    assert any('se_layer.conv1.conv.weight' in k for k in full.state_dict())
    _assert_fits(full.state_dict(), 'mmpretrain', arch='D2se')
    arch = reduced_arch('D2se')
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        theirs = mmpretrain_models.RepVGG(arch=dict(
            mmpretrain_models.RepVGG.arch_settings['D2se'],
            num_blocks=list(arch['num_blocks'])), out_indices=(3,))
    randomize_bn(theirs)
    theirs.eval()
    path = tmp_path / 'mmpretrain_d2se.pth'
    torch.save({'state_dict': OrderedDict(
        ('backbone.' + k, v) for k, v in theirs.state_dict().items())}, path)
    ours = _load(arch, path)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert relative_error(theirs(x)[0], ours(x)[0]) <= TOL


# ------------------------------------------------------------- QARepVGG
def test_qa_block_structure():
    """3x3 conv+BN; a plain 1x1 conv; a plain identity; one BN after the
    sum, before the ReLU; the stem and first blocks have no identity."""
    block = QARepVGGBlock(8, 8)
    assert set(dict(block.named_children())) == {
        'rbr_dense', 'rbr_1x1', 'rbr_identity', 'bn', 'act'}
    assert type(block.rbr_1x1) is nn.Conv2d and block.rbr_1x1.bias is None
    assert type(block.rbr_identity) is nn.Identity
    assert isinstance(block.rbr_dense.bn, nn.BatchNorm2d)
    assert isinstance(block.bn, nn.BatchNorm2d)
    # the forward is relu(bn(dense + 1x1 + x)), by hand
    randomize_bn(block, seed=2)
    block.eval()
    x = torch.randn(2, 8, 7, 9)
    with torch.no_grad():
        by_hand = torch.relu(block.bn(block.rbr_dense(x) + block.rbr_1x1(x)
                                      + x))
        assert torch.equal(block(x), by_hand)
    with torch.device('meta'):
        model = RepVGG('A0', block='qarepvgg')
    keys = set(model.state_dict())
    assert 'stage1.1.bn.running_mean' in keys
    assert 'stage1.1.rbr_1x1.weight' in keys
    assert not any('rbr_identity' in k or 'rbr_1x1.bn' in k for k in keys)
    assert model.stage0.rbr_identity is None
    assert model.stage1[0].rbr_identity is None
    assert type(model.stage1[1].rbr_identity) is nn.Identity


@pytest.mark.parametrize('arch', PAPER_ARCHS + ('D2se',))
def test_qa_deploy_geometry_equals_repvgg_deploy(arch):
    """deploy=True builds the same plain geometry for both blocks, so fused
    checkpoints of both load the same way."""
    with torch.device('meta'):
        qa = RepVGG(arch, block='qarepvgg', deploy=True, dilation='fast')
        rep = RepVGG(arch, deploy=True, dilation='fast')
    assert {k: v.shape for k, v in qa.state_dict().items()} == {
        k: v.shape for k, v in rep.state_dict().items()}
    assert_same_fused_geometry(qa, rep)


@pytest.mark.parametrize('block', BLOCK_TYPES)
def test_training_checkpoint_fuses_on_load_and_loads_into_both_blocks(
        tmp_path, block):
    """A training-time checkpoint (of either block, in a segmentor's
    ``backbone.`` wrapper) loads as it is, and into a deploy backbone
    (fused on load through reparam.fuse_block_state_dict); the fused
    weights load into a deploy model of either block with identical
    outputs."""
    torch.manual_seed(3)
    # B1g4's layout (groups 4 on every other layer, 'fast' dilation) at
    # reduced depth and a quarter of its widths: its kinds of blocks
    arch = dict(reduced_arch('B1g4', DILATION_DEPTHS),
                width_factor=(0.5, 0.5, 0.5, 1))
    kwargs = dict(dilation='fast', out_indices=(2, 4))
    source = RepVGG(arch, block=block, **kwargs).eval()
    assert [b.groups for _, b in source.blocks()][1:5] == [1, 4, 1, 4]
    randomize_bn(source)
    path = tmp_path / f'{block}_train.pth'
    torch.save({'meta': {}, 'state_dict': OrderedDict(
        ('backbone.' + k, v) for k, v in source.state_dict().items())}, path)
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        ref = source(x)
        unfused = _load(arch, path, block=block, **kwargs)
        assert all(torch.equal(a, b) for a, b in zip(ref, unfused(x)))
        on_load = _load(arch, path, block=block, deploy=True, **kwargs)
        assert relative_error(ref, on_load(x)) <= TOL
        reparameterize(source)
        fused_path = tmp_path / f'{block}_deploy.pth'
        torch.save(source.state_dict(), fused_path)
        fused = source(x)
        assert relative_error(ref, fused) <= TOL
        for other in BLOCK_TYPES:
            model = _load(arch, fused_path, block=other, deploy=True,
                          **kwargs)
            assert all(torch.equal(a, b) for a, b in zip(fused, model(x)))


def test_official_repvgg_checkpoint_refused_by_qa(tmp_path, official_keys):
    path = tmp_path / 'RepVGG-A0-train.pth'
    torch.save(official_state(official_keys['RepVGG-A0']['train']), path)
    for deploy in (False, True):
        with pytest.raises(CheckpointError, match=(
                r"training-time RepVGG weights .*block='qarepvgg'.*no BN"
                r".*No official QARepVGG ImageNet weights exist")):
            _load('A0', path, block='qarepvgg', deploy=deploy)
    # and the other way round
    qa = RepVGG('A0', block='qarepvgg')
    path = tmp_path / 'qa.pth'
    torch.save(qa.state_dict(), path)
    with pytest.raises(CheckpointError, match=r"training-time QARepVGG "
                       r"weights.*build it with block='qarepvgg'"):
        _load('A0', path)
    # a QA checkpoint of another arch is named as such
    with pytest.raises(CheckpointError, match=r'looks like RepVGG-A0 '
                       r'\(QARepVGG, training-time\)'):
        _load('A1', path, block='qarepvgg')


def test_qa_missing_checkpoint_says_how_to_get_one(tmp_path):
    with pytest.raises(FileNotFoundError, match='No official QARepVGG '
                       'ImageNet weights exist.*qarepvgg_<arch>_120e'):
        _load('A0', tmp_path / 'QARepVGG-A0-train.pth', block='qarepvgg')


def test_qa_reparam_function_matches_state_dict_path():
    """The block (module path) and fuse_block_state_dict (checkpoint path)
    give the kernel and bias of the unfused block's own forward (eval mode:
    bn(dense + 1x1 + x) before the ReLU); a 1x1 bias is folded too."""
    block = QARepVGGBlock(8, 8, groups=2, dilation=2)
    randomize_bn(block, seed=5)
    block.eval()
    x = torch.randn(1, 8, 9, 9)
    module_path = block.get_equivalent_kernel_bias()
    checkpoint_path = fuse_block_state_dict(block.state_dict(), '', 2,
                                            has_identity=True)
    with torch.no_grad():
        pre_act = block.bn(block.rbr_dense(x) + block.rbr_1x1(x) + x)
        assert torch.equal(block(x), torch.relu(pre_act))
        for kernel, bias in (module_path, checkpoint_path):
            out = nn.functional.conv2d(x, kernel, bias, padding=2,
                                       dilation=2, groups=2)
            assert relative_error(pre_act, out) <= 1e-6
    assert torch.equal(module_path[0], checkpoint_path[0])
    assert torch.equal(module_path[1], checkpoint_path[1])
    with pytest.raises(ConfigError, match='needs has_identity'):
        fuse_block_state_dict(block.state_dict(), '', 2)
    # with a 1x1 bias: fused conv == bn(dense + conv1x1_with_bias + x)
    one_bias = torch.randn(8)
    dense = (block.rbr_dense.conv.weight,
             BNParams.from_module(block.rbr_dense.bn))
    k3, b3 = fuse_qa_branches(dense, (block.rbr_1x1.weight, one_bias), True,
                              BNParams.from_module(block.bn), 2)
    with torch.no_grad():
        ref = block.bn(block.rbr_dense(x) + block.rbr_1x1(x)
                       + one_bias.reshape(1, -1, 1, 1) + x)
        out = nn.functional.conv2d(x, k3, b3, padding=2, dilation=2,
                                   groups=2)
    assert relative_error(ref, out) <= 1e-6


def test_plain_conv_qa_and_act_cfg():
    """plain_conv is the fused conv only when the block computes exactly
    relu(conv(x)): fused, no SE, ReLU."""
    block = QARepVGGBlock(4, 4)
    assert block.plain_conv is None
    block.switch_to_deploy()
    assert block.plain_conv is block.rbr_reparam
    for act_cfg in (None, dict(type='LeakyReLU', negative_slope=0.1),
                    dict(type='ReLU6')):
        for cls in (RepVGGBlock, QARepVGGBlock):
            assert cls(4, 4, deploy=True, act_cfg=act_cfg).plain_conv is None


def test_unknown_block_refused():
    with pytest.raises(ConfigError, match="unknown RepVGG block 'qa'; "
                       'valid: repvgg, qarepvgg$'):
        RepVGG('A0', block='qa')


# ------------------------------------------------------ training steps
# (the QA configs themselves: tests/configs/test_pspnet.py's
# test_table8_configs and tests/configs/test_imagenet.py's
# test_config_builds, parametrized over the block)
_TINY_ARCH = TINY_ARCHS['two_identity_stages']


def _one_step(model, data, scope):
    from mmengine.optim import OptimWrapper
    from mmengine.registry import DefaultScope
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01,
                                         momentum=0.9))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    with DefaultScope.overwrite_default_scope(scope):
        log_vars = model.train_step(data, optim)
    loss = float(torch.as_tensor(log_vars['loss']).detach())
    assert math.isfinite(loss)
    changed = [n for n, p in model.named_parameters()
               if not torch.equal(before[n], p)]
    # every QA branch is trained: 3x3, its BN, the plain 1x1, post-sum BN
    # (stage2.1: a block with an identity branch)
    for name in ('backbone.stage2.1.rbr_dense.conv.weight',
                 'backbone.stage2.1.rbr_dense.bn.weight',
                 'backbone.stage2.1.rbr_1x1.weight',
                 'backbone.stage2.1.bn.weight'):
        assert name in changed, name
    return loss


def test_qa_classification_training_step(restore_default_scope):
    """The QA ImageNet config's classifier (tiny arch) takes an optimizer
    step."""
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    from mmpretrain.structures import DataSample

    from repvgg_seg.config import load_config
    cfg = load_config(osp.join(REPO, 'configs', 'imagenet',
                               'qarepvgg_a0_120e.py'))
    cfg.model.backbone.arch = _TINY_ARCH
    cfg.model.head.in_channels = 256
    cfg.model.head.num_classes = 2
    cfg.model.data_preprocessor.num_classes = 2
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg.model)
    model.init_weights()
    gen = torch.Generator().manual_seed(0)
    data = dict(
        inputs=[torch.randint(0, 256, (3, 48, 48), dtype=torch.uint8,
                              generator=gen) for _ in range(2)],
        data_samples=[DataSample().set_gt_label(i) for i in (0, 1)])
    _one_step(model, data, 'mmpretrain')


def test_qa_segmentation_training_step(restore_default_scope):
    """The Table 8 QA config's PSPNet (tiny arch, BN instead of SyncBN on
    the CPU) takes an optimizer step."""
    from mmengine.model import revert_sync_batchnorm
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    from repvgg_seg.config import load_config
    register_all_modules()
    cfg = load_config(osp.join(REPO, 'configs',
                               'pspnet_qarepvgg_b1g2_fast.py'))
    cfg.model.backbone.arch = _TINY_ARCH
    cfg.model.backbone.init_cfg = None
    cfg.model.decode_head.in_channels = 256
    cfg.model.decode_head.channels = 8
    cfg.model.auxiliary_head.in_channels = 128
    cfg.model.auxiliary_head.channels = 8
    cfg.model.data_preprocessor.size = (64, 64)
    torch.manual_seed(0)
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    model.init_weights()
    data = seg_batch()
    _one_step(model, data, 'mmseg')


# ------------------------------------------------- strides and dilations
@pytest.mark.parametrize('strides,dilations,sizes', [
    ((2, 2, 2, 1), (1, 1, 1, 2), (32, 16, 8, 4, 4)),   # output stride 16
    ((2, 2, 1, 1), (1, 1, 2, 4), (32, 16, 8, 8, 8)),   # output stride 8
])
def test_strides_dilations_feature_sizes_and_fusion(strides, dilations,
                                                    sizes):
    torch.manual_seed(7)
    model = RepVGG('A0', strides=strides, dilations=dilations,
                   out_indices=(0, 1, 2, 3, 4)).eval()
    assert (model.strides, model.dilations) == (strides, dilations)
    randomize_bn(model)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        assert [o.shape[-1] for o in ref] == list(sizes)
        assert [o.shape[1] for o in ref] == [48, 48, 96, 192, 1280]
        reparameterize(model)
        assert relative_error(ref, model(x)) <= TOL
    # every block of a stage has the stage's dilation; padding = dilation
    for stage, rate in zip(range(1, 5), dilations):
        for block in getattr(model, f'stage{stage}'):
            conv = block.rbr_reparam
            assert conv.dilation == conv.padding == (rate, rate)


def test_tuples_equal_named_mode_and_keep_checkpoints(tmp_path,
                                                      official_keys):
    """strides=(2, 2, 1, 1), dilations=(1, 1, 2, 4) is 'last_two_stages'
    exactly; the identity branches follow the ImageNet layout, so an
    official checkpoint fits any strides."""
    torch.manual_seed(8)
    mode = RepVGG('A0', dilation='last_two_stages').eval()
    randomize_bn(mode)
    tuples = RepVGG('A0', strides=(2, 2, 1, 1),
                    dilations=(1, 1, 2, 4)).eval()
    tuples.load_state_dict(mode.state_dict())
    x = torch.randn(1, 3, 33, 41)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(mode(x), tuples(x)))
    path = tmp_path / 'a0.pth'
    torch.save(official_state(official_keys['RepVGG-A0']['train']), path)
    for strides in ((1, 1, 1, 1), (2, 1, 2, 1)):
        model = _load('A0', path, strides=strides, dilations=(1, 2, 1, 3))
        assert model.stage2[0].rbr_identity is None  # as on ImageNet
        assert model.stage2[0].rbr_dense.conv.stride == (1, 1)
    # and the deploy geometry matches the converted one
    reparameterize(tuples)
    deploy = RepVGG('A0', strides=(2, 2, 1, 1), dilations=(1, 1, 2, 4),
                    deploy=True).eval()
    deploy.load_state_dict(tuples.state_dict())
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(tuples(x), deploy(x)))


def test_mode_and_tuples_together_refused():
    with pytest.raises(ConfigError, match=r"either a dilation mode "
                       r"\(dilation='fast'\) or per-stage strides/dilations"):
        RepVGG('A0', dilation='fast', dilations=(1, 1, 2, 4))
    with pytest.raises(ConfigError, match='not both'):
        RepVGG('A0', dilation='last_two_stages', strides=(2, 2, 1, 1))


@pytest.mark.parametrize('kwargs,match', [
    (dict(strides=(2, 2, 1)), 'strides must be 4 ints'),
    (dict(strides=(2, 2, 3, 1)), 'strides must be 4 ints'),
    (dict(dilations=(1, 1, 0, 2)), 'dilations must be 4 ints'),
    (dict(dilations=(1, 1, 2.0, 4)), 'dilations must be 4 ints'),
    (dict(dilation='os16'), "unknown dilation mode 'os16'"),
])
def test_bad_strides_dilations_refused(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        RepVGG('A0', **kwargs)


# ------------------------------------------------ act_cfg and init_cfg
def test_act_cfg():
    model = RepVGG('A0', act_cfg=dict(type='LeakyReLU', negative_slope=0.1),
                   out_indices=(4,)).eval()
    assert all(type(b.act) is nn.LeakyReLU and b.act.negative_slope == 0.1
               for _, b in model.blocks())
    randomize_bn(model, seed=9)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        assert (ref[0] < 0).any()  # not a ReLU
        reparameterize(model)
        assert relative_error(ref, model(x)) <= TOL
    assert type(RepVGG('A0', act_cfg=None).stage0.act) is nn.Identity
    with pytest.raises(ConfigError, match='unknown activation'):
        RepVGG('A0', act_cfg=dict(type='NoSuchAct'))


def test_list_init_cfg_pretrained_is_strict(tmp_path, official_keys):
    """A list init_cfg with Pretrained goes through the project's strict
    loader, after the other entries (mmengine's order)."""
    state = official_state(official_keys['RepVGG-A0']['train'])
    path = tmp_path / 'a0.pth'
    torch.save(state, path)
    init_cfg = [dict(type='Constant', layer='Conv2d', val=0.0),
                dict(type='Pretrained', checkpoint=str(path))]
    model = RepVGG('A0', init_cfg=copy.deepcopy(init_cfg))
    model.init_weights()
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    # a checkpoint that does not fit is an error, not a lenient partial load
    del state['stage2.3.rbr_1x1.conv.weight']
    torch.save(state, path)
    with pytest.raises(CheckpointError, match='missing keys: '
                       r'stage2\.3\.rbr_1x1\.conv\.weight'):
        RepVGG('A0', init_cfg=copy.deepcopy(init_cfg)).init_weights()
    # no Pretrained entry: mmengine's initializers as usual
    model = RepVGG('A0', init_cfg=init_cfg[:1])
    model.init_weights()
    assert not model.stage4[0].rbr_dense.conv.weight.any()
    with pytest.raises(ConfigError, match='2 Pretrained entries'):
        RepVGG('A0', init_cfg=[init_cfg[1], init_cfg[1]]).init_weights()
