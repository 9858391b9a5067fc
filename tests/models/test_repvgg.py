"""RepVGG backbone: archs, re-parameterization, dilation, mmseg conventions."""
import copy

import pytest
import torch
import torch.nn as nn

from repvgg_seg import reparameterize
from repvgg_seg.models import (ARCH_SETTINGS, BLOCK_TYPES, PAPER_ARCHS,
                               QARepVGGBlock, RepVGG, RepVGGBlock)
from repvgg_seg.models.reparam import identity_kernel
from tests.helpers import (DILATION_DEPTHS, TINY_ARCHS,
                           assert_same_fused_geometry, captured_log,
                           randomize_bn, reduced_arch, relative_error)

MODES = (None, 'last_two_stages', 'fast')
BLOCK_CLASSES = {'repvgg': RepVGGBlock, 'qarepvgg': QARepVGGBlock}
# Not a multiple of 32, and not square: exercises padding and odd sizes.
INPUT = (1, 3, 37, 45)


def _official_param_count(keys: dict) -> int:
    """Learnable parameters of an official checkpoint's key table."""
    total = 0
    for name, shape in keys.items():
        if name.endswith(('running_mean', 'running_var',
                          'num_batches_tracked')):
            continue
        n = 1
        for s in shape:
            n *= s
        total += n
    return total


def test_arch_table_is_the_papers():
    """ARCH_SETTINGS: the paper's Table 3 (depths, width multipliers), the
    official grouped layers, and the widths RepVGG builds from them."""
    assert ARCH_SETTINGS['A0']['num_blocks'] == (2, 4, 14, 1)
    assert ARCH_SETTINGS['A0']['width_factor'] == (0.75, 0.75, 0.75, 2.5)
    assert ARCH_SETTINGS['B1g2']['group_layer_map'] == {
        layer: 2 for layer in range(2, 27, 2)}
    with torch.device('meta'):
        assert RepVGG('A0').out_channels == [48, 48, 96, 192, 1280]


def test_block_is_relu_of_its_three_branches():
    """A RepVGG block computes relu(3x3 conv+BN + 1x1 conv+BN + BN)."""
    block = RepVGGBlock(8, 8).eval()
    randomize_bn(block, seed=1)
    y = torch.randn(1, 8, 5, 7)
    with torch.no_grad():
        by_hand = torch.relu(block.rbr_dense(y) + block.rbr_1x1(y)
                             + block.rbr_identity(y))
        assert torch.equal(block(y), by_hand)


def _assert_deploy_build_fits(converted, arch, block, mode):
    """A ``deploy=True`` build (on the meta device) has the converted
    model's state dict shapes and fused-conv geometry."""
    with torch.device('meta'):
        deploy = RepVGG(arch, block=block, out_indices=(0, 1, 2, 3, 4),
                        dilation=mode, deploy=True)
    assert {k: v.shape for k, v in deploy.state_dict().items()} == {
        k: v.shape for k, v in converted.state_dict().items()}
    assert_same_fused_geometry(converted, deploy)


@pytest.mark.parametrize('block', BLOCK_TYPES)
@pytest.mark.parametrize('arch', PAPER_ARCHS)
def test_reparam_equivalence_every_arch_and_dilation(arch, block):
    """Fused output == training-time output (eval mode, random BN
    statistics) within 1e-5 rel, for both blocks, every arch (at reduced
    depth: its widths and groups, :data:`tests.helpers.DILATION_DEPTHS`)
    and dilation mode. Fusion does not depend on the mode (the same fused
    weights), and each mode's converted geometry is its deploy=True
    geometry, at reduced depth and for the full arch (on the meta device),
    so the fused weights of any mode run in a deploy model of every
    mode."""
    torch.manual_seed(0)
    x = torch.randn(*INPUT)
    outs = (0, 1, 2, 3, 4)
    reduced = reduced_arch(arch, DILATION_DEPTHS)
    base_state = fused_state = None
    for mode in MODES:
        if base_state is None:
            model = RepVGG(reduced, block=block, out_indices=outs,
                           dilation=mode)
            randomize_bn(model)
            base_state = model.state_dict()
        else:  # dilation never changes parameters: the same weights load
            with torch.device('meta'):  # (and no time spent on init)
                model = RepVGG(reduced, block=block, out_indices=outs,
                               dilation=mode)
            model.load_state_dict(base_state, assign=True)
        assert all(type(b) is BLOCK_CLASSES[block]
                   for _, b in model.blocks())
        model.eval()
        with torch.no_grad():
            ref = model(x)
            reparameterize(model)
            fused = model(x)
        assert all(isinstance(m.rbr_reparam, nn.Conv2d)
                   for _, m in model.blocks())
        assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
        err = relative_error(ref, fused)
        assert err < 1e-5, f'{arch} {block} {mode}: rel err {err}'
        if fused_state is None:
            fused_state = model.state_dict()
        else:
            state = model.state_dict()
            assert list(state) == list(fused_state)
            assert all(torch.equal(v, fused_state[k])
                       for k, v in state.items()), mode
        _assert_deploy_build_fits(model, reduced, block, mode)
        with torch.device('meta'):
            full = RepVGG(arch, block=block, out_indices=outs, dilation=mode)
        reparameterize(full)
        _assert_deploy_build_fits(full, arch, block, mode)


@pytest.mark.parametrize('arch', PAPER_ARCHS + ('D2se',))
def test_state_dict_matches_official_keys_and_shapes(arch, official_keys):
    """Training-time and deploy state dicts have the official checkpoint's
    names and shapes exactly (heads excluded), which also pins where the
    grouped layers are."""
    table = official_keys[f'RepVGG-{arch}']
    for deploy in (False, True):
        with torch.device('meta'):
            model = RepVGG(arch, deploy=deploy)
        ours = {k: list(v.shape) for k, v in model.state_dict().items()}
        theirs = {k: v for k, v in table['deploy' if deploy else
                                         'train'].items()
                  if not k.startswith('linear.')}
        assert ours == theirs


# The paper's Table 4/5 parameter counts (deploy models, with a 1000-class
# linear head), in millions; the other archs are checked against the official
# deploy key table.
PAPER_PARAMS_M = {'A0': 8.30, 'A1': 12.78, 'A2': 25.49, 'B0': 14.33,
                  'B1': 51.82, 'B1g2': 41.36, 'B1g4': 36.12, 'B2': 80.31,
                  'B2g4': 55.77, 'B3': 110.96, 'B3g4': 75.62}
# Exact parameter counts with the 1000-class head (the paper truncates
# them; README and docs/backbone.md state them in millions), so that a
# change of one layer's bias or width shows: RepVGG training-time,
# QARepVGG training-time, and deploy (the same plain geometry for both
# blocks).
EXACT_PARAMS = {
    'A0': (9_108_968, 9_103_304, 8_309_384),
    'A1': (14_092_264, 14_084_712, 12_789_864),
    'A2': (28_210_600, 28_199_272, 25_499_944),
    'B0': (15_817_960, 15_808_616, 14_339_048),
    'B1': (57_415_016, 57_396_328, 51_829_480),
    'B1g2': (45_782_376, 45_763_688, 41_360_104),
    'B1g4': (39_966_056, 39_947_368, 36_125_416),
    'B2': (89_022_376, 88_999_016, 80_315_112),
    'B2g2': (70_846_376, 70_823_016, 63_956_712),
    'B2g4': (61_758_376, 61_735_016, 55_777_512),
    'B3': (123_085_288, 123_057_256, 110_960_872),
    'B3g2': (96_911_848, 96_883_816, 87_404_776),
    'B3g4': (83_825_128, 83_797_096, 75_626_728),
    'D2se': (133_334_836, 133_294_836, 120_387_572),
}


def _with_head(backbone) -> int:
    """Parameters with the 1000-class linear head, as in Table 4."""
    head = nn.Linear(backbone.out_channels[-1], 1000, device='meta')
    return sum(p.numel() for m in (backbone, head) for p in m.parameters())


@pytest.mark.parametrize('block', BLOCK_TYPES)
@pytest.mark.parametrize('arch', PAPER_ARCHS + ('D2se',))
def test_parameter_counts(arch, block, official_keys):
    """Exact counts of both blocks, training-time and deploy; RepVGG's equal
    the official checkpoints' key tables and the paper's Table 4/5. QA has
    no identity BN (2C fewer parameters per identity block) and trades the
    1x1 BN for the post-sum BN (same count)."""
    rep_train, qa_train, deploy_count = EXACT_PARAMS[arch]
    with torch.device('meta'):
        train = RepVGG(arch, block=block)
        deploy = RepVGG(arch, block=block, deploy=True)
    assert _with_head(deploy) == deploy_count
    if block == 'repvgg':
        assert _with_head(train) == rep_train
        table = official_keys[f'RepVGG-{arch}']
        assert rep_train == _official_param_count(table['train'])
        assert deploy_count == _official_param_count(table['deploy'])
        if arch in PAPER_PARAMS_M:
            assert abs(deploy_count / 1e6 - PAPER_PARAMS_M[arch]) < 0.015
    else:
        assert _with_head(train) == qa_train
        identity = sum(2 * b.out_channels for _, b in train.blocks()
                       if b.rbr_identity is not None)
        assert qa_train == rep_train - identity


@pytest.mark.parametrize('mode,stride', [(None, 32), ('last_two_stages', 8),
                                         ('fast', 8)])
def test_output_strides_and_channels(mode, stride):
    """B1g2's feature shapes, computed on the meta device (shapes only)."""
    with torch.device('meta'):
        model = RepVGG('B1g2', out_indices=(0, 1, 2, 3, 4), dilation=mode)
        outs = model.eval()(torch.empty(1, 3, 64, 96))
    strides = {None: (2, 4, 8, 16, 32)}.get(mode, (2, 4, 8, 8, 8))
    assert strides[-1] == stride
    assert [tuple(o.shape) for o in outs] == [
        (1, c, 64 // s, 96 // s)
        for c, s in zip((64, 128, 256, 512, 2048), strides)]
    assert model.out_channels == [64, 128, 256, 512, 2048]


def _dilations(model):
    return [(name, block.dilation) for name, block in model.blocks()]


def test_dilation_placement():
    """B1g2: 'last_two_stages' dilates all 16+1 blocks of stages 3-4, 'fast'
    the last 5 layers; strides, padding and the 1x1 branch as specified."""
    with torch.device('meta'):  # structure only: no weights needed
        full = RepVGG('B1g2', dilation='last_two_stages')
        fast = RepVGG('B1g2', dilation='fast')
        plain = RepVGG('B1g2')
    count = lambda m: sum(d > 1 for _, d in _dilations(m))  # noqa: E731
    assert (count(full), count(fast), count(plain)) == (17, 5, 0)
    assert [d for n, d in _dilations(fast) if d > 1] == [2, 2, 2, 2, 4]
    assert [n for n, d in _dilations(fast) if d > 1] == [
        'stage3.12', 'stage3.13', 'stage3.14', 'stage3.15', 'stage4.0']
    for model in (full, fast):
        assert model.stage3[0].rbr_dense.conv.stride == (1, 1)
        assert model.stage4[0].rbr_dense.conv.stride == (1, 1)
        for _, block in model.blocks():
            conv3 = block.rbr_dense.conv
            assert conv3.padding == conv3.dilation == (block.dilation,) * 2
            conv1 = block.rbr_1x1.conv
            assert conv1.dilation == (1, 1) and conv1.padding == (0, 0)
    # stage 3's first block in 'fast': stride 1 but not dilated
    assert fast.stage3[0].dilation == 1 and full.stage3[0].dilation == 2
    # dilation survives fusion
    reparameterize(fast)
    assert fast.stage4[0].rbr_reparam.dilation == (4, 4)
    assert fast.stage4[0].rbr_reparam.padding == (4, 4)


def test_custom_arch_dict():
    arch = dict(TINY_ARCHS['two_identity_stages'], group_layer_map={2: 2,
                                                                    4: 4})
    model = RepVGG(arch, out_indices=(4,)).eval()
    # layers count from stage1's first block (1): 2 = stage2.0, 4 = stage3.0
    assert model.stage2[0].groups == 2 and model.stage3[0].groups == 4
    assert model.stage2[1].groups == 1
    randomize_bn(model)
    x = torch.randn(2, 3, 33, 40)
    with torch.no_grad():
        ref = model(x)
        reparameterize(model)
        assert relative_error(ref, model(x)) < 1e-5


@pytest.mark.parametrize('mode', MODES)
def test_converted_state_dict_loads_into_deploy_model(mode):
    """A deploy=True build has exactly the converted model's geometry
    (padding, dilation, groups): its state dict loads and gives identical
    outputs (B1g4 at reduced depth: its widths and grouped layers)."""
    torch.manual_seed(1)
    arch = reduced_arch('B1g4', DILATION_DEPTHS)
    model = RepVGG(arch, dilation=mode, out_indices=(2, 4)).eval()
    randomize_bn(model)
    reparameterize(model)
    with torch.device('meta'):  # every weight comes from the state dict
        deploy = RepVGG(arch, dilation=mode, out_indices=(2, 4),
                        deploy=True).eval()
    deploy.load_state_dict(model.state_dict(), strict=True, assign=True)
    assert_same_fused_geometry(model, deploy)
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        for a, b in zip(model(x), deploy(x)):
            assert torch.equal(a, b)


# Per block: the BN layers of stage1.1 (a block with an identity branch).
BLOCK_BNS = {'repvgg': ('rbr_dense.bn', 'rbr_1x1.bn', 'rbr_identity'),
             'qarepvgg': ('rbr_dense.bn', 'bn')}


@pytest.mark.parametrize('block', BLOCK_TYPES)
def test_conversion_idempotent_train_mode_and_syncbn(block):
    """Conversion uses running statistics in train mode too, works with
    SyncBN layers, and a second call changes nothing."""
    torch.manual_seed(2)
    model = RepVGG('A0', block=block, norm_cfg=dict(type='SyncBN'),
                   out_indices=(4,))
    for name in BLOCK_BNS[block]:
        assert isinstance(model.stage1[1].get_submodule(name),
                          nn.SyncBatchNorm), name
    randomize_bn(model)
    # reference computed in eval mode on an equivalent BN model (SyncBN
    # cannot run forward without a process group)
    ref_model = RepVGG('A0', block=block, out_indices=(4,)).eval()
    ref_model.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 37, 29)
    with torch.no_grad():
        ref = ref_model(x)
    model.train()
    reparameterize(model)
    state = copy.deepcopy(model.state_dict())
    reparameterize(model)
    assert all(torch.equal(state[k], v) for k, v in
               model.state_dict().items())
    model.eval()
    with torch.no_grad():
        assert relative_error(ref, model(x)) < 1e-5


def test_grouped_identity_kernel():
    """Output channel i of a grouped identity reads channel i % (C/g) of its
    group: the conv with this kernel returns its input."""
    kernel = identity_kernel(8, 4, 3, torch.empty(0))
    assert kernel.shape == (8, 2, 3, 3)
    assert kernel[5, 1, 1, 1] == 1 and kernel[5, 0, 1, 1] == 0
    assert kernel.sum() == 8
    x = torch.randn(1, 8, 5, 5)
    y = torch.nn.functional.conv2d(x, kernel, padding=1, groups=4)
    assert torch.equal(x, y)


def test_grouped_block_with_identity_equivalence():
    block = RepVGGBlock(8, 8, groups=4, dilation=3).eval()
    assert block.rbr_identity is not None
    randomize_bn(block, seed=3)
    x = torch.randn(2, 8, 11, 13)
    with torch.no_grad():
        ref = block(x)
        block.switch_to_deploy()
        assert relative_error(ref, block(x)) < 1e-6


def test_bn_eps_taken_from_each_layer():
    """A BN layer with a large eps converts exactly (no hard-coded 1e-5)."""
    block = RepVGGBlock(4, 4, norm_cfg=dict(type='BN', eps=0.5)).eval()
    randomize_bn(block, seed=4)
    assert block.rbr_identity.eps == 0.5
    x = torch.randn(1, 4, 6, 6)
    with torch.no_grad():
        ref = block(x)
        block.switch_to_deploy()
        assert relative_error(ref, block(x)) < 1e-6


def test_dilated_block_padding_keeps_size_and_1x1_exact():
    """A dilated 3x3 with the centred 1x1 folded in equals the branches."""
    block = RepVGGBlock(6, 6, dilation=4).eval()
    randomize_bn(block, seed=5)
    x = torch.randn(1, 6, 9, 10)
    with torch.no_grad():
        ref = block(x)
        assert ref.shape == x.shape
        block.switch_to_deploy()
        out = block(x)
    assert block.rbr_reparam.padding == (4, 4)
    assert relative_error(ref, out) < 1e-6


# Per block: every learnable tensor the fused kernel and bias depend on.
BLOCK_PARAMS = {
    'repvgg': ('rbr_dense.conv.weight', 'rbr_dense.bn.weight',
               'rbr_dense.bn.bias', 'rbr_1x1.conv.weight',
               'rbr_1x1.bn.weight', 'rbr_1x1.bn.bias',
               'rbr_identity.weight', 'rbr_identity.bias'),
    'qarepvgg': ('rbr_dense.conv.weight', 'rbr_dense.bn.weight',
                 'rbr_dense.bn.bias', 'rbr_1x1.weight', 'bn.weight',
                 'bn.bias')}


@pytest.mark.parametrize('block', BLOCK_TYPES)
def test_equivalent_kernel_is_differentiable(block):
    module = BLOCK_CLASSES[block](4, 4).train()
    randomize_bn(module, seed=10)  # (beta = 0 would give zero gradients)
    kernel, bias = module.get_equivalent_kernel_bias()
    (kernel.square().sum() + bias.square().sum()).backward()
    params = dict(module.named_parameters())
    assert set(params) == set(BLOCK_PARAMS[block])
    for name in BLOCK_PARAMS[block]:
        assert params[name].grad.abs().sum() > 0, name


@pytest.mark.parametrize('block', BLOCK_TYPES)
def test_d2se_se_runs_after_conversion(block):
    """D2se's SE layers (after the branch sum, or after QARepVGG's post-sum
    BN) survive fusion and still act. The output checked is stage 1's, so
    stages 2-4 are shrunk: stages 0-1 are D2se's own (8 SE blocks of
    width 160), the rest is not built at full size for nothing."""
    arch = dict(ARCH_SETTINGS['D2se'], num_blocks=(8, 1, 1, 1),
                width_factor=(2.5, 0.25, 0.25, 0.25))
    torch.manual_seed(6)
    model = RepVGG(arch, block=block, out_indices=(1,)).eval()
    with torch.device('meta'):
        d2se = RepVGG('D2se', block=block)
    assert {k: v.shape for k, v in model.state_dict().items()
            if k.startswith(('stage0.', 'stage1.'))} == {
        k: v.shape for k, v in d2se.state_dict().items()
        if k.startswith(('stage0.', 'stage1.'))}
    randomize_bn(model)
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        ref = model(x)
        reparameterize(model)
        assert model.stage1[0].se is not None
        assert relative_error(ref, model(x)) < 1e-5
        model.stage1[0].se.up.bias.add_(5.0)  # the SE still acts
        assert relative_error(ref, model(x)) > 1e-3


def test_frozen_stages_freeze_params_and_bn_stats():
    model = RepVGG('A0', frozen_stages=1, out_indices=(4,))
    model.train()
    for stage in (model.stage0, model.stage1):
        assert not any(p.requires_grad for p in stage.parameters())
        assert not any(m.training for m in stage.modules())
    assert all(p.requires_grad for p in model.stage2.parameters())
    before = model.stage1[0].rbr_dense.bn.running_mean.clone()
    model(torch.randn(2, 3, 32, 32))
    assert torch.equal(before, model.stage1[0].rbr_dense.bn.running_mean)
    assert model.stage2[0].rbr_dense.bn.training


def test_norm_eval_keeps_bn_in_eval():
    model = RepVGG('A0', norm_eval=True, out_indices=(4,)).train()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and not any(bn.training for bn in bns)
    assert model.stage4[0].training  # the rest stays in train mode


def test_with_cp_gives_same_gradients():
    """Gradient checkpointing runs every block through
    ``torch.utils.checkpoint`` in training (and not in eval), with the
    same gradients as the plain model."""
    from unittest import mock

    import torch.utils.checkpoint as checkpoint
    torch.manual_seed(7)
    plain = RepVGG('A0', out_indices=(3, 4)).train()
    cp_model = RepVGG('A0', out_indices=(3, 4), with_cp=True).train()
    cp_model.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 32, 32)
    grads = []
    for model in (plain, cp_model):
        with mock.patch('repvgg_seg.models.blocks.cp.checkpoint',
                        wraps=checkpoint.checkpoint) as spy:
            sum(o.sum() for o in model(x.clone().requires_grad_())
                ).backward()
        grads.append(spy.call_count)
    assert grads == [0, len(cp_model.blocks())]  # 22 blocks of A0
    for (name, p), q in zip(plain.named_parameters(), cp_model.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-5, atol=1e-6), name
    with mock.patch('repvgg_seg.models.blocks.cp.checkpoint') as spy, \
            torch.no_grad():
        cp_model.eval()(x)
    assert spy.call_count == 0


def test_training_a_deploy_model_warns():
    import logging
    with captured_log() as log:
        model = RepVGG('A0', deploy=True)
        model.train()
        model.eval()
        model.train()  # warned once, not on every call
        RepVGG('A0').train()  # a training-time model does not warn
    warnings = [(r.levelno, r.getMessage()) for r in log.records
                if r.levelno >= logging.WARNING]
    assert warnings == [(logging.WARNING, (
        'train() was called on a deploy-mode RepVGG (plain 3x3 convs, no '
        'BN): training a fused model is almost always a mistake; train the '
        'multi-branch model and convert it afterwards.'))]


def test_reparameterize_verify_reports_differences():
    model = RepVGG('A0', out_indices=(4,))
    randomize_bn(model)
    report = reparameterize(model, verify=True, input_shape=(1, 3, 35, 35))
    assert report['converted'] == 1 + 2 + 4 + 14 + 1  # every A0 block
    assert report['max_rel_diff'] < 1e-5
    # a conversion that changes the function is reported, and refused
    # with a tolerance
    from repvgg_seg.errors import VerificationError
    for tolerance in (None, 1e-4):
        broken = RepVGG('A0', out_indices=(4,))
        randomize_bn(broken)
        block = broken.stage2[1]
        exact = block.get_equivalent_kernel_bias
        block.get_equivalent_kernel_bias = lambda: (exact()[0] * 1.05,
                                                    exact()[1])
        if tolerance is None:
            report = reparameterize(broken, verify=True,
                                    input_shape=(1, 3, 35, 35))
            assert report['max_rel_diff'] > 1e-3
            assert report['max_abs_diff'] > 0
        else:
            with pytest.raises(VerificationError, match='differs'):
                reparameterize(broken, verify=True, tolerance=tolerance,
                               input_shape=(1, 3, 35, 35))
