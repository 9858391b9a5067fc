"""Fixes from the code review of issue 19: the synthetic scenes' windows,
the data-set check's settings, NumPy 1 checkpoints, output folders, one
'none' convention, checkpoint mismatch hints, prepare_imagenet's errors,
RepVGG's deprecated ``pretrained``."""
import builtins
import os
import os.path as osp
import warnings

import numpy as np
import pytest
import torch

from repvgg_seg.datasets.scenes import Camera, Canvas, Scene
from tests.conftest import REPO
from tests.helpers import official_state, run_tool


def error_report(err: str) -> str:
    """The ``error: ...`` report a tool ends with (log lines go before)."""
    assert 'error: ' in err, err
    return err[err.index('error: '):]


# ------------------------------------------------------ synthetic scenes
def _glass_heights(size, x, z0, z1, top, seed=0):
    """Heights above the ground (camera heights) of the window pixels of
    one facade at ``x`` from ``z0`` to ``z1``, ``top`` high."""
    rng = np.random.default_rng(seed)
    canvas = Canvas(*size)
    cam = Camera(*size, rng)
    scene = Scene(canvas, cam, rng)
    scene._draw_windows(x, z0, z1, top)
    glass = len(canvas.materials) - 1  # the last material added
    rows, cols = np.nonzero(canvas.ids == glass)
    # back through the camera: a column is a depth on the wall's plane, a
    # row a height at that depth
    z = x * cam.focal / (cols + 0.5 - cam.vp_x)
    return 1.0 - (rows + 0.5 - cam.horizon) * z / cam.focal


def test_upper_floors_get_windows():
    """A facade long enough that its far windows are too small to draw:
    the first floor's row used to end the whole facade there."""
    heights = _glass_heights((128, 256), x=-3.0, z0=3.0, z1=300.0, top=10.0)
    # floors are 1.7-2.1 high, the first windows 0.6 floor up, half a
    # floor high: first-floor windows end below 2.31
    assert heights.min() < 2.0
    assert heights.max() > 6.0, heights.max()


# ----------------------------------------------------- data-set checks
def test_data_check_takes_the_settings_of_the_built_data_set():
    """The class's defaults (ADE20K: .jpg/.png, reduce_zero_label, 150
    classes) under the config's settings, without building a transform."""
    from repvgg_seg.datasets.config_check import check_options
    classes, options = check_options(dict(
        type='ADE20KDataset', data_root='data/ade',
        data_prefix=dict(img_path='images/training',
                         seg_map_path='annotations/training'),
        pipeline=[dict(type='NotATransform'),
                  dict(type='RandomCrop', crop_size=(512, 512))]))
    assert len(classes) == 150 and classes[:2] == ['wall', 'building']
    assert options == dict(
        data_root='data/ade', img_dir='images/training',
        ann_dir='annotations/training', img_suffix='.jpg',
        seg_map_suffix='.png', num_classes=150, ignore_index=255,
        reduce_zero_label=True, crop_size=(512, 512))
    classes, options = check_options(dict(
        type='CityscapesDataset', data_root='data/cityscapes',
        metainfo=dict(classes=('road', 'car')), ignore_index=254,
        seg_map_suffix='_gtFine_labelIds.png'), data_root='elsewhere')
    assert classes == ['road', 'car']
    assert options == dict(
        data_root='elsewhere', img_dir='', ann_dir='',
        img_suffix='_leftImg8bit.png', seg_map_suffix='_gtFine_labelIds.png',
        num_classes=2, ignore_index=254, reduce_zero_label=False,
        crop_size=None)


# ------------------------------------------------------- checkpoints
def test_checkpoints_load_where_numpy_has_no_numpy_core_module(
        tmp_path, monkeypatch):
    """NumPy 1 has numpy.core only (numpy._core came with NumPy 2)."""
    from repvgg_seg.io.checkpoint import load_checkpoint_file
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


def test_pretrained_is_deprecated_as_in_mmseg_and_still_loads(tmp_path):
    from repvgg_seg.models import RepVGG
    arch = dict(num_blocks=(1, 1, 1, 1), width_factor=(0.25,) * 4)
    source = RepVGG(arch)
    path = tmp_path / 'backbone.pth'
    torch.save(source.state_dict(), path)
    with pytest.warns(UserWarning) as caught:
        model = RepVGG(arch, pretrained=str(path))
    assert [str(w.message) for w in caught] == [
        'DeprecationWarning: pretrained is deprecated, please use '
        '"init_cfg" instead']
    assert model.init_cfg == dict(type='Pretrained', checkpoint=str(path))
    model.init_weights()
    assert torch.equal(model.stage1[0].rbr_dense.conv.weight,
                       source.stage1[0].rbr_dense.conv.weight)


# ---------------------------------------------- tools: outputs, 'none'
@pytest.fixture(scope='module')
def deploy_files(tiny_config, tiny_checkpoint, tmp_path_factory):
    """tools/convert.py to OUT in folders that do not exist yet, as in the
    README (``deploy/b1g2_fast.pth``)."""
    out = tmp_path_factory.mktemp('convert') / 'deploy' / 'tiny' / 'fast.pth'
    code, err = run_tool('convert', tiny_config, tiny_checkpoint, str(out),
                         '--shape', '64', '64')
    assert code == 0, err
    return dict(checkpoint=str(out), config=str(out)[:-4] + '_deploy.py')


def test_convert_creates_the_output_folders(deploy_files, tiny_config,
                                            tiny_checkpoint, tmp_path,
                                            capsys):
    folder = osp.dirname(deploy_files['checkpoint'])
    assert sorted(os.listdir(folder)) == ['fast.pth', 'fast_deploy.py']
    # an existing output still needs --force
    code, err = run_tool('convert', tiny_config, tiny_checkpoint,
                         deploy_files['checkpoint'], capsys=capsys)
    assert code == 2
    assert error_report(err).startswith(
        f'error: {deploy_files["checkpoint"]} already exists; pass --force')
    # a folder that cannot be made: a file is in the way
    blocker = tmp_path / 'deploy'
    blocker.write_text('a file')
    out = blocker / 'tiny' / 'fast.pth'
    code, err = run_tool('convert', tiny_config, tiny_checkpoint, str(out),
                         capsys=capsys)
    assert code == 2
    assert error_report(err).startswith(
        f'error: cannot write {out}: {blocker} is a file, not a folder\n')
    assert blocker.read_text() == 'a file'


def test_export_takes_none_and_makes_the_folder(tiny_config, tmp_path,
                                                capsys):
    out = tmp_path / 'onnx' / 'random.onnx'
    code, err = run_tool('export_onnx', tiny_config, 'none', str(out),
                         '--shape', '64', '64', capsys=capsys)
    assert code == 0, err
    assert out.stat().st_size > 10000


def test_quantize_takes_none_as_export_does(tiny_config, tmp_path, capsys):
    """'none' is random weights, not a file name: the run gets past the
    weights to the next check (the input size, checked on the model)."""
    out = tmp_path / 'int8' / 'model.xml'
    code, err = run_tool('quantize', tiny_config, 'NONE', str(out),
                         '--shape', '0', '64', capsys=capsys)
    assert code == 2
    report = error_report(err)
    assert 'checkpoint file not found' not in report
    assert report.startswith('error: input shape 0x64 is too small')


def test_convert_refuses_none_in_its_argument_check(tiny_config, tmp_path,
                                                    capsys):
    with pytest.raises(SystemExit) as exit_:
        run_tool('convert', tiny_config, 'none', str(tmp_path / 'x.pth'))
    assert exit_.value.code == 2
    assert "argument checkpoint: 'none' (random weights) does not apply " \
        'here: this tool needs trained weights' in capsys.readouterr().err
    assert not (tmp_path / 'x.pth').exists()


@pytest.mark.parametrize('tool', ['convert', 'export_onnx', 'quantize'])
def test_help_says_what_none_means(tool, capsys):
    from tests.helpers import load_tool
    with pytest.raises(SystemExit):
        load_tool(tool).main(['--help'])
    text = ' '.join(capsys.readouterr().out.split())
    expected = ("not 'none': there are no random weights to convert"
                if tool == 'convert' else "or 'none' for random weights")
    assert expected in text


# ---------------------------------------------- checkpoint mismatch hints
# configs/pspnet_r50.py shrunk to a ResNet-18 with small heads
R18 = {'model.backbone.depth': 18, 'model.decode_head.in_channels': 512,
       'model.decode_head.channels': 16,
       'model.auxiliary_head.in_channels': 256,
       'model.auxiliary_head.channels': 16}
R18_ARGS = ['--cfg-options'] + [f'{k}={v}' for k, v in R18.items()]


def test_a_repvgg_checkpoint_for_a_resnet_config_is_named(
        official_keys, tmp_path, capsys):
    """It used to be told to use 'the training config, not a deploy
    config'."""
    path = tmp_path / 'RepVGG-A0-train.pth'
    torch.save(official_state(official_keys['RepVGG-A0']['train']), path)
    code, err = run_tool('convert', osp.join(REPO, 'configs',
                                             'pspnet_r50.py'),
                         str(path), str(tmp_path / 'out.pth'), *R18_ARGS,
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
    from repvgg_seg.apis import build_model
    path = tmp_path / 'r18.pth'
    torch.save(build_model(osp.join(REPO, 'configs', 'pspnet_r50.py'),
                           cfg_options=R18).state_dict(), path)
    code, err = run_tool('convert', tiny_config, str(path),
                         str(tmp_path / 'out.pth'), capsys=capsys)
    assert code == 2
    assert '; the checkpoint looks like ResNet-18, the model is a RepVGG ' \
        '(custom arch)\n' in error_report(err)


def test_deploy_and_training_forms_of_the_same_model_are_told(
        deploy_files, tiny_config, tiny_checkpoint, tmp_path, capsys):
    code, err = run_tool('convert', tiny_config, deploy_files['checkpoint'],
                         str(tmp_path / 'again.pth'), capsys=capsys)
    assert code == 2
    assert error_report(err).rstrip().endswith(
        '; it is the deploy (fused) form of this model: use the deploy '
        'config written next to it by tools/convert.py\n(set '
        'REPVGG_SEG_DEBUG=1 to see the traceback)')
    code, err = run_tool('export_onnx', deploy_files['config'],
                         tiny_checkpoint, str(tmp_path / 'x.onnx'),
                         '--shape', '64', '64', capsys=capsys)
    assert code == 2
    assert '; it is the training form of this model: use the training ' \
        'config, not a deploy config\n' in error_report(err)


def test_state_dicts_that_differ_in_more_than_the_form_get_no_form_hint():
    from repvgg_seg.io.state_dict import is_fused_form
    from repvgg_seg.models import RepVGG, deploy_copy
    arch = dict(num_blocks=(1, 1, 1, 1), width_factor=(0.25,) * 4)
    model = RepVGG(arch)
    training, deploy = model.state_dict(), deploy_copy(model).state_dict()
    assert is_fused_form(training, deploy)
    assert not is_fused_form(deploy, training)
    other = RepVGG(dict(arch, width_factor=(0.5,) * 4))
    assert not is_fused_form(other.state_dict(), deploy)  # other widths
    fewer = {k: v for k, v in deploy.items() if not k.startswith('stage4.')}
    assert not is_fused_form(training, fewer)


# ------------------------------------------------- prepare_imagenet
def test_prepare_imagenet_reports_problems_as_every_tool_does(tmp_path,
                                                             capsys):
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
