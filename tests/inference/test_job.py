"""The job behind tools/infer.py (:mod:`repvgg_seg.inference.job`):
folders and lists on the engines, mirrored outputs equal to the
inferencer's, resume, sharding over ranks, each rank's device, bad input.

The tiny trained model of the suite (``tiny_trained``) on 64x128 synthetic
images; the OpenVINO engine runs from the checkpoint, exported on the
fly."""
import json
import os
import os.path as osp
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO
from tests.helpers import error_line, free_port, run_tool

from .conftest import infer, outputs, read_png

def test_folder_mirrored_outputs_equal_the_inferencer(tiny_trained, photos,
                                                      tmp_path, capsys):
    """A nested folder: an overlay and a label map per image, under the
    image's relative path, and the label maps are the inferencer's
    predictions."""
    from repvgg_seg.config import as_config
    from repvgg_seg.inference import RepVGGSegInferencer
    from repvgg_seg.inference.sources import folder_items
    code, err = infer(tiny_trained, photos, tmp_path, '--save-pred',
                      'trainid', '--legend', capsys=capsys)
    assert code == 0, err
    items = folder_items(photos)
    assert len(items) == 8
    assert outputs(tmp_path) == sorted(
        [f'vis/{i.name}.jpg' for i in items]
        + [f'pred/{i.name}.png' for i in items])
    inferencer = RepVGGSegInferencer(
        model=as_config(tiny_trained['config'], tiny_trained['options']),
        weights=tiny_trained['checkpoint'])
    expected = inferencer([i.path for i in items])['predictions']
    for item, labels in zip(items, expected):
        written = read_png(str(tmp_path / 'pred' / f'{item.name}.png'))
        assert written.dtype == np.uint8 and written.shape == (64, 128)
        assert np.array_equal(written, labels)
    # the overlay: the image's size plus the legend strip below it
    vis = read_png(str(tmp_path / 'vis' / f'{items[0].name}.jpg'))
    assert vis.shape[1] == 128 and vis.shape[0] > 64


def test_images_that_share_a_stem_get_outputs_of_their_own(
        tiny_trained, synthetic_root, tmp_path, capsys):
    """photo.png, photo.jpg and photo.webp (three different images) in one
    folder: three overlays and three label maps, each the inferencer's
    prediction of its own file, and the log counts 4 images for 4 inputs.
    A clash that keeping the suffix cannot resolve stops the job before
    any work (the model is not built), in one line."""
    import cv2
    from repvgg_seg.config import as_config
    from repvgg_seg.inference import RepVGGSegInferencer
    from repvgg_seg.inference.sources import folder_items
    folder = tmp_path / 'in'
    folder.mkdir()
    sources = [i.path for i in folder_items(
        osp.join(synthetic_root, 'leftImg8bit'))]
    for source, name in zip(sources, ('photo.png', 'photo.jpg', 'photo.webp',
                                      'other.png')):
        cv2.imwrite(str(folder / name), cv2.imread(source))
    out = tmp_path / 'out'
    code, err = infer(tiny_trained, str(folder), out, '--save-pred',
                      'trainid', capsys=capsys)
    assert code == 0, err
    assert 'segmented 4 images' in err
    names = ['other', 'photo.jpg', 'photo.png', 'photo.webp']
    assert outputs(out) == [f'pred/{n}.png' for n in names] + [
        f'vis/{n}.jpg' for n in names]
    inferencer = RepVGGSegInferencer(
        model=as_config(tiny_trained['config'], tiny_trained['options']),
        weights=tiny_trained['checkpoint'])
    files = [str(folder / n) if n != 'other' else str(folder / 'other.png')
             for n in names]
    expected = inferencer(files)['predictions']
    written = [read_png(str(out / 'pred' / f'{n}.png')) for n in names]
    assert all(np.array_equal(w, e) for w, e in zip(written, expected))
    # three different images: three different label maps
    assert not np.array_equal(written[1], written[2])
    shutil.copy(folder / 'other.png', folder / 'photo.png.jpg')
    # before any work: not even the config is read
    code, err = run_tool('infer', str(folder), str(tmp_path / 'none.py'),
                         'none', '--out-dir', str(tmp_path / 'out2'),
                         capsys=capsys)
    assert code == 2
    assert error_line(err) == (
        f'error: {folder}/photo.png and {folder}/photo.png.jpg would write '
        "the same outputs (named 'photo.png'); rename one of them")
    assert not osp.exists(tmp_path / 'out2')


def test_resume_writes_only_the_missing_outputs(tiny_trained, photos,
                                                tmp_path, capsys):
    """A rerun over a folder whose first 3 images have their outputs (from
    a list file beside them: the same names) writes the other 5 and leaves
    those 3 untouched; --force redoes all 8."""
    from repvgg_seg.inference.sources import folder_items
    items = folder_items(photos)
    first = tmp_path / 'first.txt'
    first.write_text(''.join(f'{osp.relpath(i.path, photos)}\n'
                             for i in items[:3]))
    # a list file beside the photos: the same names as the folder run
    listed = osp.join(photos, 'first3.txt')
    shutil.copy(first, listed)
    out = tmp_path / 'out'
    try:
        code, err = infer(tiny_trained, listed, out, '--out-json',
                          str(tmp_path / 'a.json'), capsys=capsys)
    finally:
        os.remove(listed)
    assert code == 0, err
    done = {p: os.stat(out / p).st_mtime_ns for p in outputs(out)}
    assert len(done) == 3
    code, err = infer(tiny_trained, photos, out, '--out-json',
                      str(tmp_path / 'b.json'), capsys=capsys)
    assert code == 0, err
    report = json.loads((tmp_path / 'b.json').read_text())
    assert (report['done'], report['existing']) == (5, 3)
    assert len(outputs(out)) == 8
    # the first three were not rewritten
    assert all(os.stat(out / p).st_mtime_ns == t for p, t in done.items())
    # --force redoes them all
    code, err = infer(tiny_trained, photos, out, '--force', '--out-json',
                      str(tmp_path / 'c.json'), capsys=capsys)
    assert json.loads((tmp_path / 'c.json').read_text())['done'] == 8


def test_two_ranks_write_every_output_once(tiny_trained, photos, tmp_path):
    """torchrun with 2 ranks: 8 outputs in all, 4 written by each rank,
    one report per rank."""
    out = tmp_path / 'out'
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=REPO)
    cmd = [sys.executable, '-m', 'torch.distributed.run',
           '--nproc_per_node', '2', '--master_port', str(free_port()),
           osp.join(REPO, 'tools', 'infer.py'), photos,
           tiny_trained['config'], tiny_trained['checkpoint'], '--out-dir',
           str(out), '--threads', '1', '--out-json', str(tmp_path / 'r.json'),
           '--cfg-options'] + [f'{k}={v}' for k, v in
                               tiny_trained['options'].items()]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(outputs(out)) == 8
    reports = [json.loads((tmp_path / f'r.rank{r}.json').read_text())
               for r in (0, 1)]
    assert [r['done'] for r in reports] == [4, 4]
    assert [r['rank'] for r in reports] == [0, 1]


def test_openvino_engine_with_streams_on_a_folder(tiny_trained, photos,
                                                  tmp_path, capsys):
    """OpenVINO with batches of 4 over 2 streams writes the same label maps
    as torch (99.9 % of the pixels)."""
    pytest.importorskip('openvino')
    torch_out, ov_out = tmp_path / 'torch', tmp_path / 'ov'
    code, err = infer(tiny_trained, photos, torch_out, '--save-pred',
                      'trainid', '--no-vis', capsys=capsys)
    assert code == 0, err
    code, err = infer(tiny_trained, photos, ov_out, '--save-pred',
                      'trainid', '--no-vis', '--engine', 'openvino',
                      '--batch-size', '4', '--streams', '2', capsys=capsys)
    assert code == 0, err
    names = outputs(torch_out)
    assert names == outputs(ov_out) and len(names) == 8
    same = np.mean([np.mean(read_png(str(torch_out / n))
                            == read_png(str(ov_out / n))) for n in names])
    assert same >= 0.999


def test_openvino_job_reads_the_graphs_labels_where_they_are_mmsegs(
        tiny_trained, synthetic_root, tmp_path):
    """An image at the model's input size (whole inference, no padding):
    the job takes the labels OpenVINO's graph computes, and they are
    mmseg's ``test_step`` labels on the same engine; an image that the
    pipeline resizes goes through mmseg's post-processing (its logits are
    resized first)."""
    pytest.importorskip('openvino')
    import cv2
    import torch
    from repvgg_seg.inference.job import InferenceJob, InferenceOptions
    small = cv2.imread(osp.join(synthetic_root, 'leftImg8bit', 'val',
                                'frankfurt', os.listdir(osp.join(
                                    synthetic_root, 'leftImg8bit', 'val',
                                    'frankfurt'))[0]))
    full = cv2.resize(small, (512, 256))  # the test pipeline's size
    job = InferenceJob(tiny_trained['config'], tiny_trained['checkpoint'],
                       InferenceOptions(out_dir=str(tmp_path),
                                        engine='openvino',
                                        cfg_options=tiny_trained['options']))
    for image, graph in ((full, True), (small, False)):
        inferencer = job.predictor.inferencer
        data = inferencer.collate_fn([inferencer.pipeline(image)])
        with torch.no_grad():
            mmseg = job.model.test_step(data)[0].pred_sem_seg.data[0]
            pre = job.model.data_preprocessor(data, False)
            labels = job.predictor.graph_labels(pre['inputs'],
                                                pre['data_samples'])
        assert (labels is not None) == graph
        predicted = job.predict([image])[0]
        assert predicted.shape == image.shape[:2]
        assert np.array_equal(predicted, mmseg.numpy())
        if graph:
            assert np.array_equal(labels[0].numpy(), mmseg.numpy())
    # THROUGHPUT hint by default: a worker more than requests in flight
    assert job.workers() == job.model.engine_forward.concurrency() + 1 >= 3


# --------------------------------------------------------------------------
# bad input: one clear line each; the job goes on where it can


def test_bad_images_are_skipped_and_listed(tiny_trained, photos, tmp_path,
                                           capsys):
    """An unreadable and a truncated image: each skipped with its reason,
    listed at the end, exit status 1; every good image is written."""
    folder = tmp_path / 'in'
    shutil.copytree(photos, folder)
    good = sorted(p for p in outputs(folder) if p.endswith('.png'))
    (folder / 'broken.png').write_bytes(b'this is no picture' * 4)
    data = (folder / good[0]).read_bytes()
    (folder / 'cut.png').write_bytes(data[:len(data) // 2])
    out = tmp_path / 'out'
    code, err = infer(tiny_trained, str(folder), out, capsys=capsys)
    assert code == 1
    assert '2 inputs skipped:' in err
    assert 'broken.png is not a readable image' in err
    assert 'cut.png is truncated' in err
    assert len(outputs(out)) == 8  # every good image written


@pytest.mark.parametrize('case', ['empty', 'not_an_image', 'video',
                                  'out_is_file', 'list_with_missing'])
def test_bad_input_one_line(case, tiny_trained, tmp_path, capsys):
    """Inputs the job cannot use: one line saying why, and exit status 2
    (nothing to do) or 1 (inputs skipped)."""
    out = tmp_path / 'out'
    if case == 'empty':
        (tmp_path / 'empty').mkdir()
        source, expected, status = str(tmp_path / 'empty'), 'no images', 2
    elif case == 'not_an_image':
        source = str(tmp_path / 'model.pth')
        open(source, 'w').close()
        expected, status = 'not an image, a folder, a list of paths', 2
    elif case == 'video':
        source = str(tmp_path / 'clip.mp4')
        with open(source, 'wb') as f:
            f.write(b'not a video')
        expected, status = 'clip.mp4: cannot be opened as a video', 1
    elif case == 'out_is_file':
        source = str(tmp_path / 'x.png')
        out.write_text('a file')
        expected, status = 'is a file, not a folder', 2
    else:
        source = str(tmp_path / 'list.txt')
        with open(source, 'w') as f:
            f.write('missing.png\n')
        expected, status = 'missing.png', 1
    code, err = infer(tiny_trained, source, out, capsys=capsys)
    assert code == status, err
    assert expected in err


def test_weights_that_do_not_fit_the_config(tiny_trained, photos, tmp_path,
                                            capsys):
    """A checkpoint of another model: the loader's list of what does not fit,
    one line."""
    import torch
    ckpt = torch.load(tiny_trained['checkpoint'], weights_only=False)
    state = ckpt['state_dict']
    key = next(k for k in state if k.endswith('conv_seg.weight'))
    state[key] = state[key][:5]
    other = tmp_path / 'other.pth'
    torch.save({'state_dict': state}, other)
    code, err = run_tool('infer', photos, tiny_trained['config'],
                         str(other), '--out-dir', str(tmp_path / 'o'),
                         '--cfg-options', *[f'{k}={v}' for k, v in
                                            tiny_trained['options'].items()],
                         capsys=capsys)
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith('error:')]
    assert len(lines) == 1 and 'does not fit the model' in lines[0]
    assert 'shape mismatches' in lines[0]


@pytest.mark.parametrize('device,local_rank,expected', [
    ('cuda', '1', 'cuda:1'), ('cuda', None, 'cuda'), ('cuda:0', '1', 'cuda:0'),
    ('cpu', '1', 'cpu')])
def test_each_torchrun_rank_gets_its_own_gpu(monkeypatch, device, local_rank,
                                             expected):
    """A bare 'cuda' under torchrun is cuda:LOCAL_RANK; an explicit device
    or the CPU stays as given."""
    from repvgg_seg.inference.predictor import local_device
    monkeypatch.delenv('LOCAL_RANK', raising=False)
    if local_rank is not None:
        monkeypatch.setenv('LOCAL_RANK', local_rank)
    assert local_device(device) == expected


@pytest.mark.parametrize('engine,device,expected,threads', [
    ('onnxruntime', 'cuda', 'cuda:1', 2), ('onnxruntime', 'cpu', 'cpu', 1),
    ('fused', None, 'cuda:1', 2), ('openvino', None, 'cpu', 1)])
def test_an_inference_job_runs_on_its_ranks_device(
        monkeypatch, tmp_path, engine, device, expected, threads):
    """tools/dist_infer.sh rank with LOCAL_RANK=1 on a GPU machine: the
    inferencer (and so the engine's RunOptions) gets cuda:1, and torch's
    threads are pinned to one only where the runtime runs on the CPU."""
    import torch
    from types import SimpleNamespace

    from repvgg_seg.inference import inferencer, job
    made, devices_set = [], []

    class RecordingInferencer:
        def __init__(self, **kwargs):
            made.append(kwargs)
            self.model = SimpleNamespace(dataset_meta=dict(
                classes=['a', 'b'], palette=[[0, 0, 0], [255, 255, 255]]))

    monkeypatch.setattr(inferencer, 'RepVGGSegInferencer',
                        RecordingInferencer)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'set_device', devices_set.append)
    monkeypatch.setenv('LOCAL_RANK', '1')
    options = job.InferenceOptions(out_dir=str(tmp_path / 'out'),
                                   engine=engine, device=device)
    run = job.InferenceJob('config.py', None, options)
    assert made[0]['device'] == expected
    assert devices_set == ([expected] if expected != 'cpu' else [])
    seen = []
    monkeypatch.setattr(run, 'run_images',
                        lambda items, report: seen.append(
                            torch.get_num_threads()))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        (tmp_path / 'in').mkdir()
        (tmp_path / 'in' / 'a.png').write_bytes(b'')
        run.run(str(tmp_path / 'in'))
    finally:
        torch.set_num_threads(before)
    assert seen == [threads]


@pytest.mark.gpu
@pytest.mark.skipif(not __import__('torch').cuda.device_count() >= 2,
                    reason='needs two CUDA devices')
def test_gpu_dist_infer_puts_each_rank_on_its_own_gpu(tiny_trained, photos,
                                                      tmp_path):
    """tools/dist_infer.sh with 2 ranks on 2 GPUs: every output once, and
    each rank's report names its own device."""
    out = tmp_path / 'out'
    env = dict(os.environ, PORT=str(free_port()),
               PATH=f'{osp.dirname(sys.executable)}{os.pathsep}'
               f'{os.environ["PATH"]}')
    proc = subprocess.run(
        ['bash', osp.join(REPO, 'tools', 'dist_infer.sh'), photos,
         tiny_trained['config'], tiny_trained['checkpoint'], '2',
         '--engine', 'fused', '--out-dir', str(out), '--out-json',
         str(tmp_path / 'r.json'), '--cfg-options'] +
        [f'{k}={v}' for k, v in tiny_trained['options'].items()],
        env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(outputs(out)) == 8
    reports = [json.loads((tmp_path / f'r.rank{r}.json').read_text())
               for r in (0, 1)]
    assert [r['device'] for r in reports] == ['cuda:0', 'cuda:1']
