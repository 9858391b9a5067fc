"""Every kind of bad input the project promises to handle, in one place.

Each case asserts the message a user sees (it names the problem and the
offending file, key or value) and that nothing is left behind: no partial
output, no checkpoint, no overwritten file. Through the command-line tools
where that is how a user meets the case (exit status 2 and one ``error:``
line instead of a traceback), through the library otherwise.
"""
import contextlib
import json
import os
import os.path as osp
import resource
import shutil
import signal

import numpy as np
import pytest
import torch
from PIL import Image

from repvgg_seg import CheckpointError, ConfigError, NonFiniteLossError
from repvgg_seg.models import RepVGG
from tests.conftest import REPO
from tests.helpers import load_backbone as _load_backbone
from tests.helpers import error_report, official_state, run_tool

IMG = '_leftImg8bit.png'
SEG = '_gtFine_labelTrainIds.png'
NO_WORKERS = ['train_dataloader.num_workers=0',
              'train_dataloader.persistent_workers=False']


def _outputs(folder) -> list:
    """The files a failed command left in a folder (a run's timestamped log
    folder aside)."""
    if not osp.isdir(folder):
        return []
    return sorted(p for p in os.listdir(folder)
                  if not osp.isdir(osp.join(folder, p)))


def _weights(folder) -> list:
    """Checkpoints and partial files in a folder."""
    return [p for p in _outputs(folder)
            if p.endswith(('.pth', '.onnx')) or '.partial' in p]


# ------------------------------------------------------------ checkpoints
def test_checkpoint_of_another_arch_names_the_arch(tmp_path, official_keys):
    path = tmp_path / 'RepVGG-B1-train.pth'
    torch.save(official_state(official_keys['RepVGG-B1']['train']), path)
    with pytest.raises(CheckpointError) as info:
        _load_backbone('B2', path)
    message = str(info.value)
    assert 'does not fit RepVGG-B2' in message
    assert 'looks like RepVGG-B1 (training-time)' in message
    assert str(path) in message


def test_missing_and_extra_keys_are_listed(tmp_path, official_keys):
    state = official_state(official_keys['RepVGG-A0']['train'])
    del state['stage2.3.rbr_1x1.conv.weight']
    state['stage9.extra'] = torch.zeros(1)
    path = tmp_path / 'broken.pth'
    torch.save(state, path)
    with pytest.raises(CheckpointError,
                       match=r'missing keys: stage2\.3\.rbr_1x1\.conv\.weight'
                       r'.*unexpected keys: stage9\.extra'):
        _load_backbone('A0', path)


def test_truncated_and_non_checkpoint_files(tmp_path, official_keys):
    good = tmp_path / 'good.pth'
    torch.save(official_state(official_keys['RepVGG-A0']['train']), good)
    data = good.read_bytes()
    truncated = tmp_path / 'truncated.pth'
    truncated.write_bytes(data[:len(data) // 3])
    with pytest.raises(CheckpointError, match='truncated.pth is not a '
                       'readable PyTorch checkpoint'):
        _load_backbone('A0', truncated)
    text = tmp_path / 'notes.pth'
    text.write_text('these are not weights')
    with pytest.raises(CheckpointError, match='notes.pth is not a readable '
                       'PyTorch checkpoint'):
        _load_backbone('A0', text)
    with pytest.raises(FileNotFoundError, match='missing.pth.*official '
                       'ImageNet checkpoint.*init_cfg=None'):
        _load_backbone('A0', tmp_path / 'missing.pth')


def test_tools_refuse_unreadable_checkpoints(tmp_path, tiny_config,
                                             tiny_checkpoint, capsys):
    truncated = tmp_path / 'truncated.pth'
    with open(tiny_checkpoint, 'rb') as f:
        truncated.write_bytes(f.read()[:5000])
    work = tmp_path / 'work'
    for tool, args, message in (
            ('test', [tiny_config, str(truncated), '--work-dir', str(work)],
             f'{truncated} is not a readable PyTorch checkpoint'),
            ('convert', [tiny_config, str(truncated),
                         str(tmp_path / 'out.pth')],
             f'{truncated} is not a readable PyTorch checkpoint'),
            ('train', [tiny_config, '--work-dir', str(work), '--resume',
                       str(tmp_path / 'gone.pth')],
             f'checkpoint file not found: {tmp_path}/gone.pth')):
        code, err = run_tool(tool, *args, capsys=capsys)
        assert code == 2, (tool, err)
        assert message in error_report(err), err
    assert _weights(work) == [] and not (tmp_path / 'out.pth').exists()


def test_resume_or_test_with_a_checkpoint_of_another_model(
        tiny_config, tiny_checkpoint, tmp_path, capsys):
    """mmengine would load it partly, with warnings, and then fail inside
    the optimizer, train a half-loaded model, or evaluate one."""
    work = tmp_path / 'work'
    other_model = ['--cfg-options', 'model.decode_head.channels=16',
                   *NO_WORKERS]
    for tool, args, start in (
            ('train', ['--resume', tiny_checkpoint],
             f'cannot resume from {tiny_checkpoint}'),
            ('test', [tiny_checkpoint], f'cannot evaluate {tiny_checkpoint}')):
        code, err = run_tool(tool, tiny_config, *args, '--work-dir',
                             str(work), *other_model, capsys=capsys)
        assert code == 2, err
        report = error_report(err)
        assert f'{start}: it does not fit the model of this config (shape ' \
            'mismatches: decode_head.' in report, report
    assert '--cfg-options load_from=' in error_report(run_tool(
        'train', tiny_config, '--resume', tiny_checkpoint, '--work-dir',
        str(work), *other_model, capsys=capsys)[1])
    assert _weights(work) == []


# ---------------------------------------------------------------- configs
@pytest.mark.parametrize('args,message', [
    (['train', 'configs/pspnet_repvgg_b9.py'],
     'config file not found: configs/pspnet_repvgg_b9.py'),
    (['train', 'configs/pspnet_repvgg_a0_fast.py', '--cfg-options',
      'model.backbone.archh=A0'], "unexpected keyword argument 'archh'"),
    (['train', 'configs/pspnet_repvgg_a0_fast.py', '--cfg-options',
      'model.backbone.arch=A9'], "unknown RepVGG arch 'A9'; valid: A0, A1"),
    (['train', 'configs/pspnet_repvgg_a0_fast.py', '--cfg-options',
      'model.backbone.dilation=last2'],
     "unknown dilation mode 'last2'; valid: None, last_two_stages, fast"),
    (['train', 'configs/pspnet_repvgg_a0_fast.py', '--cfg-options',
      'model.backbone.out_indices=(1,2,3,7)'], 'out_indices must be'),
    (['test', 'configs/pspnet_repvgg_a0_fast.py', 'missing.pth'],
     'checkpoint file not found: missing.pth'),
])
def test_bad_command_lines_give_one_clear_line(args, message, tmp_path,
                                               capsys, monkeypatch):
    """Bad configs reach the user as one line. ``--data-check off``: the
    configs point at data/cityscapes, which the test machine lacks."""
    monkeypatch.chdir(REPO)
    work = tmp_path / 'w'
    code, err = run_tool(*args, '--work-dir', str(work), '--data-check',
                         'off', capsys=capsys)
    assert code == 2
    assert message in error_report(err)
    assert 'Traceback' not in err
    assert _outputs(work) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU-only case')
def test_amp_without_a_gpu(tiny_config, tmp_path, capsys):
    work = tmp_path / 'work'
    code, err = run_tool('train', tiny_config, '--amp', '--work-dir',
                         str(work), capsys=capsys)
    assert code == 2
    assert '--amp needs a GPU' in error_report(err)
    assert _outputs(work) == []


def test_invalid_backbone_arguments_list_valid_values():
    with pytest.raises(ConfigError, match="unknown dilation mode "
                       "'last_stage'; valid: None, last_two_stages, fast"):
        RepVGG('A0', dilation='last_stage')
    with pytest.raises(ConfigError, match="unknown RepVGG arch 'B4'; valid: "
                       'A0, A1'):
        RepVGG('B4')
    with pytest.raises(ValueError, match=r'out_indices must be .* in 0\.\.4'):
        RepVGG('A0', out_indices=(1, 5))
    with pytest.raises(ConfigError,
                       match=r"arch dict needs \['width_factor'\]"):
        RepVGG(dict(num_blocks=(1, 1, 1, 1)))


# --------------------------------------------------------------- datasets
# Each kind of damage once, through tools/train.py (the check's own cases,
# one by one, are tests/datasets/test_datasets.py's): every damage of a
# split at once, each on a file of its own, so that one run shows that
# every finding is reported together and names its file.
def _nth(root, split, suffix, n):
    folder = 'leftImg8bit' if suffix == IMG else 'gtFine'
    found = []
    for dirpath, _, names in sorted(os.walk(osp.join(root, folder, split))):
        found += [osp.join(dirpath, name) for name in sorted(names)
                  if name.endswith(suffix)]
    assert len(found) > n, f'no {n + 1} {suffix} under {root}'
    return found[n]


def _delete_label(root, split, n):
    path = _nth(root, split, SEG, n)
    os.remove(path)
    return ['images without a label file',
            osp.basename(path).replace(SEG, IMG)]


def _delete_image(root, split, n):
    path = _nth(root, split, IMG, n)
    os.remove(path)
    return ['label files without an image',
            osp.basename(path).replace(IMG, SEG)]


def _unpaired_names(root, split, n):
    path = _nth(root, split, SEG, n)
    os.rename(path, path.replace('_000019_', '_000099_'))
    return ['images without a label file', 'label files without an image',
            osp.basename(path).replace(SEG, IMG),
            osp.basename(path).replace('_000019_', '_000099_')]


def _label_size_differs(root, split, n):
    path = _nth(root, split, SEG, n)
    Image.fromarray(np.zeros((32, 64), np.uint8)).save(path)
    return ['label files whose size differs from their image',
            f'{osp.basename(path)}: 32x64, image 64x128']


def _label_values_out_of_range(root, split, n):
    path = _nth(root, split, SEG, n)
    label = np.array(Image.open(path))
    label[0, :3] = (19, 40, 254)
    Image.fromarray(label).save(path)
    return ['label files with values outside 0..18 and 255 (ignore_index)',
            f'{osp.basename(path)}: values 19, 40, 254']


def _image_16bit_low_range(root, split, n):
    path = _nth(root, split, IMG, n)
    rgb = np.array(Image.open(path).convert('L')).astype(np.uint16)
    Image.fromarray(rgb).save(path)  # 8-bit values stored in 16 bits
    return ['images that mmseg does not load correctly',
            f'{osp.basename(path)} (16-bit with values up to']


def _corrupt_image(root, split, n):
    path = _nth(root, split, IMG, n)
    with open(path, 'rb') as f:
        data = f.read()
    with open(path, 'wb') as f:
        f.write(data[:len(data) // 2])
    return ['unreadable or corrupt files', osp.basename(path)]


# per split: the damages (the n-th file of the split each) and the counts
# the report then gives. The val split (2 images) is checked after the
# train split, so its run keeps the train split intact.
DAMAGES = {
    'train': ((_delete_label, _unpaired_names, _label_size_differs,
               _label_values_out_of_range, _image_16bit_low_range),
              ['2 images without a label file',
               '1 label files without an image',
               '1 label files whose size differs', '1 label files with values',
               '1 images that mmseg does not load correctly']),
    'val': ((_delete_image, _corrupt_image),
            ['1 label files without an image',
             '1 unreadable or corrupt files']),
}


@pytest.mark.parametrize('split', sorted(DAMAGES))
def test_train_refuses_a_broken_data_set(split, synthetic_root, tiny_config,
                                         tmp_path, capsys):
    """tools/train.py checks the train and val sets before it builds
    anything and names every offending file."""
    root = str(tmp_path / 'data')
    shutil.copytree(synthetic_root, root)
    damages, expected = DAMAGES[split]
    # the last file first: a damage moves no file that is still to come
    for n, damage in reversed(list(enumerate(damages))):
        expected = expected + damage(root, split, n)
    work = tmp_path / 'work'
    code, err = run_tool('train', tiny_config, '--work-dir', str(work),
                         '--cfg-options', *NO_WORKERS,
                         f'train_dataloader.dataset.data_root={root}',
                         f'val_dataloader.dataset.data_root={root}',
                         capsys=capsys)
    assert code == 2, err
    report = error_report(err)
    assert f'error: {split} data: ' in report
    assert 'data set check failed' in report
    for text in expected:
        assert text in report, (text, err)
    assert _weights(work) == []
    passed = (json.loads((work / 'data_check.json').read_text())['passed']
              if (work / 'data_check.json').exists() else [])
    assert len(passed) == {'train': 0, 'val': 1}[split]  # the intact split


def test_missing_data_root(tiny_config, tmp_path, capsys):
    missing = tmp_path / 'nowhere'
    code, err = run_tool('train', tiny_config, '--work-dir',
                         str(tmp_path / 'work'), '--cfg-options',
                         f'train_dataloader.dataset.data_root={missing}',
                         capsys=capsys)
    assert code == 2
    assert f'train data: data root {missing} does not exist' in err
    # where the data comes from, and how to point elsewhere
    assert 'gtFine_trainvaltest.zip' in err and \
        'tools/prepare_cityscapes.py' in err and \
        'train_dataloader.dataset.data_root=' in err


def test_images_smaller_than_an_unresized_crop(tiny_config, tmp_path,
                                               capsys):
    """A RandomCrop that sees the stored images (no resize before it) must
    fit them; after a resize the crop does not bound the stored size."""
    config = tmp_path / 'crop.py'
    config.write_text(
        f'_base_ = {tiny_config!r}\n'
        'train_dataloader = dict(dataset=dict(pipeline=[\n'
        "    dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),\n"
        "    dict(type='RandomCrop', crop_size=(96, 96)),\n"
        "    dict(type='PackSegInputs')]))\n")
    code, err = run_tool('train', str(config), '--work-dir',
                         str(tmp_path / 'work'), '--data-check', 'quick',
                         capsys=capsys)
    assert code == 2
    assert 'images smaller than the crop size 96x96 (HxW)' in err
    assert f'aachen_000000_000019{IMG}: 64x128' in err


def test_gray_rgba_and_16bit_images_are_accepted_with_warnings(
        synthetic_root, tiny_config, tmp_path):
    """What mmseg converts correctly is accepted: grayscale and RGBA images
    load as BGR, 16-bit images that use the 16-bit range as their high
    byte."""
    from repvgg_seg.config import load_config
    from repvgg_seg.runs import setup_train_cfg
    root = str(tmp_path / 'data')
    shutil.copytree(synthetic_root, root)
    paths = []
    for dirpath, _, names in sorted(os.walk(osp.join(root, 'leftImg8bit',
                                                     'train'))):
        paths += [osp.join(dirpath, n) for n in sorted(names)]
    rgb = np.array(Image.open(paths[0]))
    Image.fromarray(rgb[..., 0]).save(paths[0])  # gray
    Image.fromarray(np.dstack([rgb, rgb[..., :1]])).save(paths[1])  # RGBA
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(paths[2])
    options = {'train_dataloader.dataset.data_root': root,
               'val_dataloader.dataset.data_root': root}
    from repvgg_seg.datasets.config_check import check_config_datasets
    reports = check_config_datasets(load_config(tiny_config, options),
                                    ['train'], nproc=1)
    warnings = '\n'.join(reports[0][2].warnings)
    assert '1 grayscale images' in warnings
    assert osp.basename(paths[0]) in warnings
    assert 'alpha channel' in warnings and osp.basename(paths[1]) in warnings
    assert '16-bit images' in warnings and osp.basename(paths[2]) in warnings
    # and tools/train.py's set-up passes (and remembers the pass)
    work = tmp_path / 'work'
    setup_train_cfg(tiny_config, work_dir=str(work), cfg_options=options)
    assert _outputs(work) == ['data_check.json']


# ------------------------------------------------------------- training
def test_nan_loss_stops_with_iteration_and_keeps_last_checkpoint(
        tmp_path, tiny_config):
    from mmengine.hooks import Hook

    from repvgg_seg.runs import build_runner, setup_train_cfg

    class PoisonLoss(Hook):
        def before_train_iter(self, runner, batch_idx, data_batch=None):
            if runner.iter == 4:  # the 5th iteration
                runner.model.decode_head.loss_decode.loss_weight = float(
                    'nan')

    cfg = setup_train_cfg(tiny_config, work_dir=str(tmp_path),
                          cfg_options={'train_dataloader.num_workers': 0,
                                       'train_dataloader.persistent_workers':
                                       False})
    runner = build_runner(cfg)
    runner.register_hook(PoisonLoss())
    with pytest.raises(NonFiniteLossError,
                       match=r'loss became nan at iteration 5 .*last good '
                       r'checkpoint is .*iter_3\.pth'):
        runner.train()
    assert sorted(p for p in os.listdir(tmp_path) if p.endswith('.pth')) \
        == ['iter_3.pth']
    from repvgg_seg import load_checkpoint_file
    state = load_checkpoint_file(tmp_path / 'iter_3.pth')['state_dict']
    assert all(torch.isfinite(v).all() for v in state.values()
               if v.is_floating_point())


# ---------------------------------------------------------------- outputs
def test_existing_outputs_are_not_overwritten(tiny_config, tiny_checkpoint,
                                              tmp_path, capsys):
    out = tmp_path / 'model.pth'
    out.write_text('keep me')
    onnx = tmp_path / 'model.onnx'
    onnx.write_text('keep me too')
    shape = ['--shape', '64', '64']
    for tool, args, target in (
            ('convert', [tiny_config, tiny_checkpoint, str(out)], out),
            ('export_onnx', [tiny_config, tiny_checkpoint, str(onnx)],
             onnx)):
        code, err = run_tool(tool, *args, *shape, capsys=capsys)
        assert code == 2
        assert f'{target} already exists; pass --force to overwrite it' \
            in err
    assert out.read_text() == 'keep me'
    assert onnx.read_text() == 'keep me too'
    # a conversion that fails its equivalence check writes nothing either
    code, err = run_tool('convert', tiny_config, tiny_checkpoint,
                         str(tmp_path / 'x.pth'), '--tolerance', '0', *shape,
                         capsys=capsys)
    assert code == 2 and 'differs from the original' in err
    assert _outputs(tmp_path) == ['model.onnx', 'model.pth']


def test_input_shapes_too_small_for_the_backbone(tiny_config,
                                                 tiny_checkpoint, tmp_path,
                                                 capsys):
    for tool, args in (
            ('benchmark', [tiny_config, '--iters', '1']),
            ('convert', [tiny_config, tiny_checkpoint,
                         str(tmp_path / 'x.pth')]),
            ('export_onnx', [tiny_config, tiny_checkpoint,
                             str(tmp_path / 'x.onnx')]),
            ('get_flops', [tiny_config])):
        code, err = run_tool(tool, *args, '--shape', '0', '64',
                             capsys=capsys)
        assert code == 2, (tool, err)
        assert 'input shape 0x64 is too small: height and width must be ' \
            'at least 32' in error_report(err), (tool, err)
    assert _outputs(tmp_path) == []


def test_benchmark_agreement_images_that_are_not_there(tiny_config,
                                                       tmp_path, capsys):
    empty = tmp_path / 'empty'
    empty.mkdir()
    (empty / 'notes.txt').write_text('not an image')
    broken = tmp_path / 'broken.png'
    broken.write_bytes(b'\x89PNG\r\n\x1a\n truncated')
    small = ['--shape', '32', '32', '--iters', '1', '--rounds', '1',
             '--warmup', '0', '--precision', 'bf16', '--layout', 'cl']
    for image, message in (
            (str(tmp_path / 'missing.png'),
             f'image not found: {tmp_path / "missing.png"}'),
            (str(empty), 'no images (.png, .jpg, .jpeg, .bmp, .tif, .tiff, '
             f'.webp) under {empty}'),
            (str(broken), f'not a readable image: {broken}')):
        code, err = run_tool('benchmark', tiny_config, '--image', image,
                             *small, capsys=capsys)
        assert code == 2, err
        assert message in error_report(err)
        assert 'Traceback' not in err


def test_unwritable_work_dir(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    blocked = tmp_path / 'file_not_dir'
    blocked.write_text('')
    code, err = run_tool('train', 'configs/pspnet_repvgg_a0_fast.py',
                         '--work-dir', str(blocked / 'sub'), capsys=capsys)
    assert code == 2
    assert f'cannot create work dir {blocked}/sub' in err


@contextlib.contextmanager
def _file_size_limit(limit: int):
    """Within the block, writes beyond ``limit`` bytes per file fail with
    EFBIG, a real write failure like a full disk (Python ignores SIGXFSZ,
    so the write returns the error instead of killing the process); the
    limits before are restored after it."""
    before = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, before[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, before)
        signal.signal(signal.SIGXFSZ, handler)


def test_failing_disk_writes_stop_cleanly(tiny_config, tiny_checkpoint,
                                          tmp_path, capsys):
    """A checkpoint write that fails for real (a file-size limit stands in
    for a full disk) ends convert and train with one line naming the file,
    and leaves no partial file."""
    out = tmp_path / 'deploy.pth'
    work = tmp_path / 'work'
    with _file_size_limit(200_000):  # logs fit, checkpoints do not
        convert = run_tool('convert', tiny_config, tiny_checkpoint, str(out),
                           '--shape', '64', '64', capsys=capsys)
        train = run_tool('train', tiny_config, '--work-dir', str(work),
                         '--cfg-options', *NO_WORKERS, capsys=capsys)
    code, err = convert
    assert code == 2, err
    assert f'error: could not write {out}: File too large; earlier files ' \
        'are untouched' in err
    assert _outputs(tmp_path) == []
    code, err = train
    assert code == 2, err
    assert f'error: could not write {work}/iter_3.pth: File too large' \
        in err
    assert _weights(work) == []


# --------------------------------------------------------------------------
# user errors vs bugs


def test_run_cli_reports_user_errors_and_keeps_bug_tracebacks(capsys):
    """A project error (or an OSError such as a missing file) is one
    ``error:`` line and exit status 2; any other exception is a bug and
    propagates with its traceback."""
    from repvgg_seg.cli import run_cli
    from repvgg_seg.errors import ConfigError, InputError

    def fails_with(exc):
        def main(argv):
            raise exc
        return main

    for exc in (ConfigError('bad config'), InputError('bad shape'),
                FileNotFoundError('checkpoint file not found: x.pth')):
        assert run_cli(fails_with(exc), []) == 2
        assert error_report(capsys.readouterr().err).splitlines()[0] == \
            f'error: {exc}'
    for bug in (TypeError('unsupported operand'), KeyError('missing'),
                ValueError('internal'), AttributeError('no attribute')):
        with pytest.raises(type(bug)):
            run_cli(fails_with(bug), [])
