"""Videos (:meth:`repvgg_seg.inference.job.InferenceJob.run_video`): the
overlay video at the input's size and fps, per-frame label maps, resume
from the label maps of a killed run, and no temporary files left behind."""
import json
import os
import os.path as osp

import numpy as np
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


def test_a_video_job_leaves_no_temporary_files(tiny_trained, video, tmp_path,
                                               capsys):
    """A finished video job leaves its outputs and nothing else (no hidden
    partial video); a rerun after a killed run removes that run's partial
    video (and the .partial.tmp.mp4 of earlier versions) and its half
    written label map, and leaves another output's partial file alone."""
    out = tmp_path / 'out'
    code, err = infer(tiny_trained, video, out, '--save-pred', 'trainid',
                      capsys=capsys)
    assert code == 0, err
    written = ['drive.mp4'] + [f'pred/drive/{k:06d}.png' for k in range(5)]
    assert outputs(out) == written
    os.remove(out / 'drive.mp4')
    for litter in ('.drive.k1ll3d_0.partial.mp4',
                   '.drive.abcdefgh.partial.tmp.mp4',
                   'pred/drive/.000004.q1w2e3r4.partial.png',
                   '.drive2.abcdefgh.partial.mp4'):
        (out / litter).write_bytes(b'half a file')
    code, err = infer(tiny_trained, video, out, '--save-pred', 'trainid',
                      capsys=capsys)
    assert code == 0, err
    assert outputs(out) == ['.drive2.abcdefgh.partial.mp4'] + written


def test_a_killed_video_resumes_from_its_label_maps(tiny_trained, video,
                                                    tmp_path, capsys):
    """With --save-pred, a rerun after a run killed at frame 3 of 5 (label
    maps 0-2 written, no video yet) segments frames 3 and 4 only, keeps the
    3 label maps it finds, writes the same 2 it lost, and draws the 5-frame
    video from them all: a label map changed on disk changes its frame."""
    import cv2

    from .conftest import read_png
    out = tmp_path / 'out'
    code, err = infer(tiny_trained, video, out, '--save-pred', 'trainid',
                      capsys=capsys)
    assert code == 0, err
    maps = [out / 'pred' / 'drive' / f'{k:06d}.png' for k in range(5)]
    first = [read_png(str(m)) for m in maps]
    before = cv2.VideoCapture(str(out / 'drive.mp4'))
    frames_before = [before.read()[1] for _ in range(2)]
    before.release()
    # the kill: no video, the last two label maps not written
    for lost in [out / 'drive.mp4'] + maps[3:]:
        os.remove(lost)
    # frame 0's label map says 'sky' everywhere (not what the model sees)
    sky = np.full_like(first[0], 10)
    assert not np.array_equal(sky, first[0])
    cv2.imwrite(str(maps[0]), sky)
    kept = [os.stat(m).st_mtime_ns for m in maps[:3]]
    code, err = infer(tiny_trained, video, out, '--save-pred', 'trainid',
                      '--out-json', str(tmp_path / 'r.json'), capsys=capsys)
    assert code == 0, err
    assert '(5 frames at 7 fps; 3 from the label maps of an earlier run)' \
        in err
    report = json.loads((tmp_path / 'r.json').read_text())
    assert (report['done'], report['existing']) == (2, 3)
    assert [os.stat(m).st_mtime_ns for m in maps[:3]] == kept
    assert all(np.array_equal(read_png(str(m)), f)
               for m, f in zip(maps[3:], first[3:]))
    assert video_frames(str(out / 'drive.mp4'))[0] == 5
    after = cv2.VideoCapture(str(out / 'drive.mp4'))
    frames_after = [after.read()[1] for _ in range(2)]
    after.release()
    diff = [np.abs(a.astype(int) - b).mean()
            for a, b in zip(frames_after, frames_before)]
    assert diff[0] > 15 and diff[1] < 5, diff
