"""What the inference tests share: a user's folder of photos, a short
video, and running ``tools/infer.py`` on the tiny trained model of the suite
(``tiny_trained``) with its test-time overrides."""
import os
import os.path as osp
import shutil

import pytest

from tests.helpers import run_tool


@pytest.fixture(scope='module')
def photos(synthetic_root, tmp_path_factory):
    """A user's folder: the 6 train and 2 val synthetic images in nested
    folders, and a notes file that is no image."""
    folder = tmp_path_factory.mktemp('photos')
    images = sorted(
        osp.join(root, name)
        for root, _, names in os.walk(osp.join(synthetic_root,
                                               'leftImg8bit'))
        for name in names if name.endswith('.png'))
    for k, path in enumerate(images):
        sub = folder / ('day' if k % 2 else 'night') / f'trip{k // 4}'
        sub.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, sub / f'frame{k:02d}.png')
    (folder / 'notes.txt.md').write_text('not an image')
    return str(folder)


def infer(tiny_trained, source, out_dir, *extra, capsys=None):
    """``tools/infer.py SOURCE`` on the tiny model: ``(exit code, stderr)``."""
    return run_tool('infer', source, tiny_trained['config'],
                    tiny_trained['checkpoint'], '--out-dir', str(out_dir),
                    *extra, '--cfg-options',
                    *[f'{k}={v}' for k, v in tiny_trained['options'].items()],
                    capsys=capsys)


def outputs(folder):
    """Every file under ``folder``, relative to it, sorted."""
    return sorted(osp.relpath(osp.join(root, name), folder)
                  for root, _, names in os.walk(folder) for name in names)


def read_png(path):
    import cv2
    return cv2.imread(path, cv2.IMREAD_UNCHANGED)
