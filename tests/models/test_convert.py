"""Whole-model conversion (README "Fusing"): ``deploy_copy``,
``reparameterize`` and ``fuse_for_deploy`` on any model."""
import torch
import torch.nn as nn
from mmcv.cnn import ConvModule

from repvgg_seg import deploy_copy, fuse_for_deploy, reparameterize
from repvgg_seg.models import RepVGG, RepVGGBlock
from tests.helpers import TINY_ARCHS, randomize_bn, relative_error


def test_deploy_copy_and_reparameterize_fuse_every_block():
    """deploy_copy: a fused copy, the original untouched; reparameterize:
    in place, every block, verified; both compute the original."""
    torch.manual_seed(0)
    arch = TINY_ARCHS['two_identity_stages']
    model = RepVGG(arch, out_indices=(2, 4)).eval()
    randomize_bn(model)
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        ref = model(x)
    copied = deploy_copy(model)
    assert copied is not model
    assert not any(isinstance(m, nn.BatchNorm2d) for m in copied.modules())
    assert not model.deploy and hasattr(model.stage2[1], 'rbr_dense')
    report = reparameterize(model, verify=True, input_shape=(1, 3, 32, 48))
    assert report['converted'] == 1 + sum(arch['num_blocks'])  # stem too
    assert report['max_rel_diff'] < 1e-5
    assert all(hasattr(b, 'rbr_reparam') and not hasattr(b, 'rbr_dense')
               for _, b in model.blocks())
    with torch.no_grad():
        assert relative_error(ref, model(x)) < 1e-5
        assert relative_error(ref, copied(x)) < 1e-5


def test_fuse_for_deploy_folds_blocks_and_heads_conv_bn():
    """The blocks and a head's conv+BN (mmcv's ConvModule), in place."""
    net = nn.Sequential(RepVGGBlock(3, 8), ConvModule(
        8, 4, 3, padding=1, norm_cfg=dict(type='BN'))).eval()
    randomize_bn(net, seed=2)
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        before = net(x)
        assert fuse_for_deploy(net) is net
        assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
        assert relative_error(before, net(x)) < 1e-5
