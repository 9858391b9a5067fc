"""RepVGG backbone: archs, re-parameterization, dilation, mmseg conventions."""
import copy

import pytest
import torch
import torch.nn as nn

from repvgg_seg import reparameterize
from repvgg_seg.models import PAPER_ARCHS, RepVGG, RepVGGBlock
from repvgg_seg.models.reparam import identity_kernel
from tests.helpers import randomize_bn, relative_error

MODES = (None, 'last_two_stages', 'fast')
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


@pytest.mark.parametrize('arch', PAPER_ARCHS)
def test_reparam_equivalence_every_arch_and_dilation(arch):
    """Fused output == training-time output (eval mode) within 1e-5 rel."""
    torch.manual_seed(0)
    x = torch.randn(*INPUT)
    base_state = None
    for mode in MODES:
        if base_state is None:
            model = RepVGG(arch, out_indices=(0, 1, 2, 3, 4), dilation=mode)
            randomize_bn(model)
            base_state = model.state_dict()
        else:  # dilation never changes parameters: the same weights load
            with torch.device('meta'):  # (and no time spent on init)
                model = RepVGG(arch, out_indices=(0, 1, 2, 3, 4),
                               dilation=mode)
            model.load_state_dict(base_state, assign=True)
        model.eval()
        with torch.no_grad():
            ref = model(x)
            reparameterize(model)
            fused = model(x)
        assert all(isinstance(m.rbr_reparam, nn.Conv2d)
                   for _, m in model.blocks())
        assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
        err = relative_error(ref, fused)
        assert err < 1e-5, f'{arch} {mode}: rel err {err}'


@pytest.mark.parametrize('arch', PAPER_ARCHS)
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


@pytest.mark.parametrize('arch', PAPER_ARCHS)
def test_parameter_counts(arch, official_keys):
    table = official_keys[f'RepVGG-{arch}']
    for deploy in (False, True):
        with torch.device('meta'):
            backbone = RepVGG(arch, deploy=deploy)
        head = nn.Linear(backbone.out_channels[-1], 1000)
        count = sum(p.numel() for p in backbone.parameters()) + sum(
            p.numel() for p in head.parameters())
        official = _official_param_count(table['deploy' if deploy else
                                               'train'])
        assert count == official
        if deploy and arch in PAPER_PARAMS_M:
            assert abs(count / 1e6 - PAPER_PARAMS_M[arch]) < 0.015


def test_known_deploy_counts():
    """Exact deploy parameter counts with the 1000-class head (the paper's
    Table 4 truncates them: A0 8.30 M, B1g2 41.36 M, B3 110.96 M), so that
    a change of one layer's bias or width shows."""
    for arch, expected in (('A0', 8_309_384), ('B1g2', 41_360_104),
                           ('B3', 110_960_872)):
        with torch.device('meta'):
            backbone = RepVGG(arch, deploy=True)
        count = sum(p.numel() for p in backbone.parameters()) + \
            backbone.out_channels[-1] * 1000 + 1000
        assert count == expected, (arch, count)


@pytest.mark.parametrize('mode,stride', [(None, 32), ('last_two_stages', 8),
                                         ('fast', 8)])
def test_output_strides_and_channels(mode, stride):
    model = RepVGG('B1g2', out_indices=(0, 1, 2, 3, 4), dilation=mode).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 96))
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
    arch = dict(num_blocks=(1, 2, 2, 1), width_factor=(0.25, 0.25, 0.5, 0.5),
                group_layer_map={2: 2, 4: 4})
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
    outputs."""
    torch.manual_seed(1)
    model = RepVGG('B1g4', dilation=mode, out_indices=(2, 4)).eval()
    randomize_bn(model)
    reparameterize(model)
    deploy = RepVGG('B1g4', dilation=mode, out_indices=(2, 4),
                    deploy=True).eval()
    deploy.load_state_dict(model.state_dict(), strict=True)
    for (_, a), (_, b) in zip(model.blocks(), deploy.blocks()):
        for attr in ('stride', 'padding', 'dilation', 'groups'):
            assert getattr(a.rbr_reparam, attr) == getattr(b.rbr_reparam,
                                                           attr)
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        for a, b in zip(model(x), deploy(x)):
            assert torch.equal(a, b)


def test_conversion_idempotent_train_mode_and_syncbn():
    """Conversion uses running statistics in train mode too, works with
    SyncBN layers, and a second call changes nothing."""
    torch.manual_seed(2)
    model = RepVGG('A0', norm_cfg=dict(type='SyncBN'), out_indices=(4,))
    assert isinstance(model.stage1[1].rbr_identity, nn.SyncBatchNorm)
    randomize_bn(model)
    # reference computed in eval mode on an equivalent BN model (SyncBN
    # cannot run forward without a process group)
    ref_model = RepVGG('A0', out_indices=(4,)).eval()
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


def test_equivalent_kernel_is_differentiable():
    block = RepVGGBlock(4, 4).train()
    kernel, bias = block.get_equivalent_kernel_bias()
    (kernel.square().sum() + bias.square().sum()).backward()
    assert block.rbr_dense.conv.weight.grad.abs().sum() > 0
    assert block.rbr_1x1.conv.weight.grad.abs().sum() > 0
    assert block.rbr_identity.weight.grad.abs().sum() > 0


def test_d2se_se_runs_after_conversion():
    torch.manual_seed(6)
    model = RepVGG('D2se', out_indices=(1,)).eval()
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
        with mock.patch('repvgg_seg.models.repvgg.cp.checkpoint',
                        wraps=checkpoint.checkpoint) as spy:
            sum(o.sum() for o in model(x.clone().requires_grad_())
                ).backward()
        grads.append(spy.call_count)
    assert grads == [0, len(cp_model.blocks())]  # 22 blocks of A0
    for (name, p), q in zip(plain.named_parameters(), cp_model.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-5, atol=1e-6), name
    with mock.patch('repvgg_seg.models.repvgg.cp.checkpoint') as spy, \
            torch.no_grad():
        cp_model.eval()(x)
    assert spy.call_count == 0


def test_training_a_deploy_model_warns():
    from unittest import mock
    with mock.patch('repvgg_seg.models.repvgg.print_log') as log:
        model = RepVGG('A0', deploy=True)
        model.train()
        model.eval()
        model.train()  # warned once, not on every call
        RepVGG('A0').train()  # a training-time model does not warn
    assert log.call_count == 1
    assert 'deploy-mode RepVGG' in log.call_args.args[0]
    assert log.call_args.kwargs['level'] == 30  # logging.WARNING


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
