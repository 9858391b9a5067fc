"""Videos (:meth:`repvgg_seg.inference.job.InferenceJob.run_video`): the
overlay video at the input's size and fps, per-frame label maps, resume
from the label maps of a killed run, and no temporary files left behind."""
import json
import os
import os.path as osp

import pytest

from .conftest import infer, outputs


@pytest.fixture
def video(synthetic_root, tmp_path):
    """A 5-frame 128x64 video at 7 fps, made of the synthetic images."""
    import cv2
    from repvgg_seg.inference.sources import folder_items
    frames = [cv2.imread(i.path) for i in folder_items(
        osp.join(synthetic_root, 'leftImg8bit'))][:5]
    path = str(tmp_path / 'drive.mp4')
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*'mp4v'), 7.0,
                             (128, 64))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def video_frames(path):
    """The frame count, fps and (width, height) of a video file."""
    import cv2
    capture = cv2.VideoCapture(path)
    assert capture.isOpened()
    try:
        return (int(capture.get(cv2.CAP_PROP_FRAME_COUNT)),
                capture.get(cv2.CAP_PROP_FPS),
                (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
                 int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))))
    finally:
        capture.release()


def test_video_round_trip(tiny_trained, video, tmp_path, capsys):
    """A 5-frame video gives a 5-frame video of the same size and fps and
    5 label maps; a rerun finds it done."""
    out = tmp_path / 'out'
    code, err = infer(tiny_trained, video, out, '--save-pred', 'trainid',
                      '--batch-size', '2', capsys=capsys)
    assert code == 0, err
    count, fps, size = video_frames(str(out / 'drive.mp4'))
    assert count == 5
    assert fps == pytest.approx(7.0)
    assert size == (128, 64)
    assert outputs(out / 'pred' / 'drive') == [f'{k:06d}.png'
                                               for k in range(5)]
    # a rerun finds the video done
    code, err = infer(tiny_trained, video, out, capsys=capsys)
    assert code == 0 and 'exists: skipped (--force redoes it)' in err
