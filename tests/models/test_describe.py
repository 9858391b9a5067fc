"""What a checkpoint that does not fit the model is told to be: another
backbone (a RepVGG arch, a ResNet depth), or the other form (deploy or
training) of the same model; through the tools, as a user meets it."""
import os.path as osp

import torch

from repvgg_seg.apis import build_model
from tests.conftest import REPO
from tests.helpers import error_report, official_state, run_tool

# configs/pspnet_r50.py shrunk to a ResNet-18 with small heads
R18 = {'model.backbone.depth': 18, 'model.decode_head.in_channels': 512,
       'model.decode_head.channels': 16,
       'model.auxiliary_head.in_channels': 256,
       'model.auxiliary_head.channels': 16}
R18_ARGS = ['--cfg-options'] + [f'{k}={v}' for k, v in R18.items()]
PSPNET_R50 = osp.join(REPO, 'configs', 'pspnet_r50.py')


def test_a_repvgg_checkpoint_for_a_resnet_config_is_named(
        official_keys, tmp_path, capsys):
    """Named as the RepVGG arch it is, not as the other form of the
    model."""
    path = tmp_path / 'RepVGG-A0-train.pth'
    torch.save(official_state(official_keys['RepVGG-A0']['train']), path)
    code, err = run_tool('convert', PSPNET_R50, str(path),
                         str(tmp_path / 'out.pth'), *R18_ARGS,
                         capsys=capsys)
    assert code == 2
    report = error_report(err)
    assert report.startswith(f'error: {path} does not fit the model: '
                             'missing keys: backbone.stem.0.weight')
    assert 'deploy config' not in report and 'training config' not in report
    assert '; the checkpoint looks like RepVGG-A0 (training-time), the ' \
        'model is ResNet-18\n' in report


def test_a_resnet_checkpoint_for_a_repvgg_config_is_named(
        tiny_config, tmp_path, capsys):
    path = tmp_path / 'r18.pth'
    torch.save(build_model(PSPNET_R50, cfg_options=R18).state_dict(), path)
    code, err = run_tool('convert', tiny_config, str(path),
                         str(tmp_path / 'out.pth'), capsys=capsys)
    assert code == 2
    assert '; the checkpoint looks like ResNet-18, the model is a RepVGG ' \
        '(custom arch)\n' in error_report(err)


def test_deploy_and_training_forms_of_the_same_model_are_told(
        tiny_deploy, tiny_config, tiny_checkpoint, tmp_path, capsys):
    code, err = run_tool('convert', tiny_config, tiny_deploy['checkpoint'],
                         str(tmp_path / 'again.pth'), capsys=capsys)
    assert code == 2
    assert error_report(err).rstrip().endswith(
        '; it is the deploy (fused) form of this model: use the deploy '
        'config written next to it by tools/convert.py\n(set '
        'REPVGG_SEG_DEBUG=1 to see the traceback)')
    code, err = run_tool('export_onnx', tiny_deploy['config'],
                         tiny_checkpoint, str(tmp_path / 'x.onnx'),
                         '--shape', '64', '64', capsys=capsys)
    assert code == 2
    assert '; it is the training form of this model: use the training ' \
        'config, not a deploy config\n' in error_report(err)
