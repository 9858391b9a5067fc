"""The engine interface (issue: inference): deploy configs build the fused
model wherever they are built, every engine computes the same labels as
torch, and the test loop runs through one engine hook.

The tiny trained model of the suite (``tiny_trained``: test images 256x512,
whole inference) throughout; small shapes."""
import os.path as osp
import sys

import numpy as np
import pytest
import torch

from repvgg_seg.errors import CheckpointError, InputError, UnavailableError

from tests.helpers import relative_error, run_tool


@pytest.fixture(scope='module')
def deploy_files(tiny_trained, tmp_path_factory):
    """tools/convert.py on the tiny trained checkpoint: ``(deploy
    checkpoint, deploy config)``."""
    from repvgg_seg.deploy import convert_checkpoint
    out = tmp_path_factory.mktemp('deploy') / 'tiny.pth'
    report = convert_checkpoint(tiny_trained['config'],
                                tiny_trained['checkpoint'], str(out),
                                cfg_options=tiny_trained['options'],
                                shape=(64, 64))
    return report['checkpoint'], report['config']


@pytest.fixture(scope='module')
def val_images(synthetic_root):
    folder = osp.join(synthetic_root, 'leftImg8bit', 'val')
    from repvgg_seg.inference.sources import folder_items
    return [item.path for item in folder_items(folder)]


def _labels(results):
    return np.stack([r.pred_sem_seg.data[0].cpu().numpy() for r in results])


def _logits(results):
    return torch.stack([r.seg_logits.data for r in results])


def _loaded_exactly(model, checkpoint):
    """Every weight of ``model`` is the checkpoint's, and the checkpoint
    has no weight the model lacks (what a strict load guarantees)."""
    state = torch.load(checkpoint, weights_only=False)['state_dict']
    ours = model.state_dict()
    assert sorted(ours) == sorted(state)
    assert all(torch.equal(ours[k].cpu(), state[k]) for k in state)


def test_deploy_config_through_mmseg_init_model_and_inferencer(
        tiny_trained, deploy_files, val_images):
    """The deploy config + deploy checkpoint in mmseg's own APIs: the model
    is built fused, the checkpoint fills it exactly (before the fix the
    heads kept default BN statistics and dropped the folded conv biases,
    with only a log line), and the labels are the training checkpoint's."""
    from mmseg.apis import MMSegInferencer, inference_model, init_model

    from repvgg_seg.config import as_config
    checkpoint, config = deploy_files
    train_cfg = as_config(tiny_trained['config'], tiny_trained['options'])
    expected = inference_model(init_model(
        train_cfg, tiny_trained['checkpoint'], device='cpu'), val_images)
    model = init_model(config, checkpoint, device='cpu')
    _loaded_exactly(model, checkpoint)
    got = inference_model(model, val_images)
    assert relative_error(_logits(expected), _logits(got)) < 1e-4
    assert np.array_equal(_labels(got), _labels(expected))
    inferencer = MMSegInferencer(model=config, weights=checkpoint,
                                 device='cpu')
    _loaded_exactly(inferencer.model, checkpoint)
    results = inferencer(val_images, return_datasamples=True)
    assert np.array_equal(_labels(results), _labels(expected))


def test_deploy_config_refuses_a_training_checkpoint(tiny_trained,
                                                     deploy_files):
    """Through mmseg's init_model (non-strict mmengine loading) too: one
    line, nothing loaded partly."""
    from mmseg.apis import init_model
    _, config = deploy_files
    with pytest.raises(CheckpointError,
                       match=r'does not fit this deploy \(fused\) model: '
                       r'it is a training-time checkpoint'):
        init_model(config, tiny_trained['checkpoint'], device='cpu')


def test_training_config_refuses_a_deploy_checkpoint(tiny_trained,
                                                     deploy_files):
    from mmseg.apis import init_model

    from repvgg_seg.config import as_config
    checkpoint, _ = deploy_files
    cfg = as_config(tiny_trained['config'], tiny_trained['options'])
    with pytest.raises(CheckpointError, match='deploy checkpoint'):
        init_model(cfg, checkpoint, device='cpu')


def test_plain_registry_build_of_a_deploy_config_is_fused(deploy_files):
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    from repvgg_seg.config import load_config
    _, config = deploy_files
    init_default_scope('mmseg')
    model = MODELS.build(load_config(config).model)
    assert type(model).__name__ == 'EncoderDecoder'
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                   for m in model.modules())


@pytest.mark.parametrize('mode', ['whole', 'slide'])
def test_torch_engine_equals_mmseg_inferencer(mode, tiny_trained,
                                              val_images):
    from mmseg.apis import MMSegInferencer

    from repvgg_seg.config import as_config
    from repvgg_seg.inference import RepVGGSegInferencer
    options = dict(tiny_trained['options'])
    if mode == 'slide':
        options['model.test_cfg'] = dict(mode='slide', crop_size=(128, 128),
                                         stride=(96, 96))
    cfg = as_config(tiny_trained['config'], options)
    theirs = MMSegInferencer(model=cfg, weights=tiny_trained['checkpoint'],
                             device='cpu')
    ours = RepVGGSegInferencer(model=cfg, weights=tiny_trained['checkpoint'],
                               engine='torch', device='cpu')
    expected = theirs(val_images, return_datasamples=True)
    got = ours(val_images, return_datasamples=True)
    assert np.array_equal(_labels(got), _labels(expected))
    assert torch.equal(got[0].seg_logits.data, expected[0].seg_logits.data)


ENGINE_CASES = ['fused', 'winograd', 'onnxruntime', 'openvino']


@pytest.mark.parametrize('engine', ENGINE_CASES)
def test_every_engine_agrees_with_torch(engine, tiny_trained, val_images):
    from repvgg_seg.config import as_config
    from repvgg_seg.engines import ENGINES
    from repvgg_seg.inference import RepVGGSegInferencer
    try:
        ENGINES[engine].require()
    except UnavailableError as exc:
        pytest.skip(str(exc))
    cfg = as_config(tiny_trained['config'], tiny_trained['options'])
    reference = RepVGGSegInferencer(model=cfg,
                                    weights=tiny_trained['checkpoint'])
    candidate = RepVGGSegInferencer(model=cfg,
                                    weights=tiny_trained['checkpoint'],
                                    engine=engine)
    expected = _labels(reference(val_images, return_datasamples=True))
    got = _labels(candidate(val_images, return_datasamples=True))
    agreement = (got == expected).mean() * 100
    assert agreement >= 99.9, agreement
    assert candidate.model.engine_info['engine'] == engine


def test_openvino_engine_runs_a_batch_on_parallel_requests(tiny_trained,
                                                           val_images):
    """streams > 1: a batch's images run on requests in flight, with the
    same labels as one at a time."""
    pytest.importorskip('openvino')
    from repvgg_seg.config import as_config
    from repvgg_seg.inference import RepVGGSegInferencer
    cfg = as_config(tiny_trained['config'], tiny_trained['options'])
    single = RepVGGSegInferencer(model=cfg, engine='openvino',
                                 weights=tiny_trained['checkpoint'])
    parallel = RepVGGSegInferencer(model=cfg, engine='openvino',
                                   weights=tiny_trained['checkpoint'],
                                   streams=2)
    one = _labels(single(val_images, return_datasamples=True))
    both = _labels(parallel(val_images, batch_size=2,
                            return_datasamples=True))
    assert np.array_equal(one, both)
    run = next(iter(parallel.model.engine_forward.runners.values()))
    assert run.concurrency >= 2


def test_openvino_runner_hands_over_channels_last_logits(tiny_trained,
                                                          tmp_path):
    """The runner's logits are the exported model's, bit for bit, as an
    NCHW tensor with channels-last strides (NHWC made in OpenVINO's graph:
    mmseg's argmax and resize then run on contiguous channels), batched
    over parallel requests too."""
    pytest.importorskip('openvino')
    from repvgg_seg.apis import LogitsModule, load_model
    from repvgg_seg.backends.openvino import openvino_infer
    from repvgg_seg.deploy.export import export_onnx_file
    from repvgg_seg.engines import RunOptions, get_engine
    from repvgg_seg.models.convert import fuse_for_deploy
    model = load_model(tiny_trained['config'], tiny_trained['checkpoint'],
                       cfg_options=tiny_trained['options'])
    fuse_for_deploy(model)
    path = str(tmp_path / 'model.onnx')
    export_onnx_file(LogitsModule(model).eval(), path, (1, 3, 64, 128))
    x = torch.randn(2, 3, 64, 128, generator=torch.Generator().manual_seed(0))
    nchw = openvino_infer(path)  # the plain NCHW output
    expected = torch.cat([nchw(w) for w in x.split(1)])
    for streams in (None, 2):
        run = get_engine('openvino').file_runner(
            path, RunOptions(streams=streams))
        assert run.channels_last and run.output_shape == [1, 19, 64, 128]
        got = run(x)
        assert got.shape == (2, 19, 64, 128)
        assert got.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(got, expected)
        assert torch.equal(got[0].argmax(0), expected[0].argmax(0))


def test_openvino_runner_from_many_threads_and_its_graph_labels(
        tiny_trained, tmp_path):
    """Compiled for throughput the runner holds a request per stream and
    is safe to call from several threads at once (an inference job's
    workers): every call gets its own input's logits, bit for bit, batched
    calls too. With ``labels`` its graph also gives the argmax, equal to
    torch's argmax of the same logits."""
    pytest.importorskip('openvino')
    from concurrent.futures import ThreadPoolExecutor

    from repvgg_seg.apis import LogitsModule, build_model
    from repvgg_seg.deploy.export import export_onnx_file
    from repvgg_seg.engines import RunOptions, get_engine
    from repvgg_seg.models.convert import fuse_for_deploy
    model = fuse_for_deploy(build_model(tiny_trained['config'],
                                        cfg_options=tiny_trained['options']))
    path = str(tmp_path / 'model.onnx')
    export_onnx_file(LogitsModule(model).eval(), path, (1, 3, 32, 64))
    inputs = torch.randn(12, 3, 32, 64,
                         generator=torch.Generator().manual_seed(1))
    engine = get_engine('openvino')
    one = engine.file_runner(path, RunOptions())
    assert one.concurrency == 1 and not one.has_labels
    expected = torch.cat([one(x) for x in inputs.split(1)])
    with pytest.raises(InputError, match='compiled without its labels'):
        one.labels(inputs[:1])
    run = engine.file_runner(path, RunOptions(streams=2, labels=True))
    assert run.concurrency >= 2 and run.has_labels
    calls = [inputs[i:i + 1] for i in range(8)] + [inputs[8:12]]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(run, calls))
        labels = list(pool.map(run.labels, calls))
    assert torch.equal(torch.cat(got), expected)
    assert torch.equal(torch.cat(labels), expected.argmax(1))
    assert labels[0].dtype == torch.int64 and labels[-1].shape == (4, 32, 64)


def test_engine_weights_by_file_type(tiny_trained, tmp_path):
    from repvgg_seg.engines import get_engine, weights_kind
    assert [weights_kind(p) for p in ('a.pth', 'a.safetensors', 'a.onnx',
                                      'b.xml', None)] == [
        'checkpoint', 'checkpoint', 'onnx', 'ir', 'checkpoint']
    with pytest.raises(InputError, match=r"unknown weights file type of "
                       r"model\.h5: '\.h5'; valid: \.onnx, \.pt, \.pth"):
        weights_kind('model.h5')
    with pytest.raises(InputError, match='the winograd engine takes a '
                       r'PyTorch checkpoint .*; m\.onnx is an ONNX file'):
        get_engine('winograd').check_weights('m.onnx')
    with pytest.raises(InputError, match="unknown engine 'tensorrt'"):
        get_engine('tensorrt')


def test_missing_engine_package_is_one_line(tiny_trained, monkeypatch):
    from repvgg_seg.engines import load_engine
    monkeypatch.setitem(sys.modules, 'onnxruntime', None)  # import fails
    with pytest.raises(UnavailableError,
                       match='the onnxruntime engine needs onnxruntime: '
                       'onnxruntime is not installed'):
        load_engine(tiny_trained['config'], tiny_trained['checkpoint'],
                    'onnxruntime', cfg_options=tiny_trained['options'])


# --------------------------------------------------------------------------
# the test loop through the engine hook


def _test_miou(tiny_trained, tmp_path, capsys, *extra, checkpoint=None):
    import json
    out = tmp_path / f'm{len(list(tmp_path.iterdir()))}.json'
    code, err = run_tool(
        'test', tiny_trained['config'],
        checkpoint or tiny_trained['checkpoint'], '--work-dir',
        str(tmp_path / 'work'), '--out-json', str(out), *extra,
        '--cfg-options', *[f'{k}={v}' for k, v in
                           tiny_trained['options'].items()], capsys=capsys)
    assert code == 0, err
    return json.loads(out.read_text())


def test_test_tool_on_the_onnxruntime_engine(tiny_trained, tmp_path,
                                             capsys):
    pytest.importorskip('onnxruntime')
    torch_m = _test_miou(tiny_trained, tmp_path, capsys)
    onnx_m = _test_miou(tiny_trained, tmp_path, capsys, '--engine',
                        'onnxruntime')
    assert onnx_m['mIoU'] == pytest.approx(torch_m['mIoU'], abs=0.01)


def _view_pipeline(flip):
    return [dict(type='LoadImageFromFile'),
            dict(type='Resize', scale=(512, 256), keep_ratio=True)] + (
        [dict(type='RandomFlip', prob=1., direction='horizontal')]
        if flip else []) + [dict(type='LoadAnnotations'),
                            dict(type='PackSegInputs')]


@pytest.mark.parametrize('engine', ['torch', 'fused'])
def test_tta_flip_equals_the_mean_of_two_softmaxes(engine, tiny_trained,
                                                   tmp_path):
    """--tta with a flip-only pipeline: mmseg's SegTTAModel averages the
    softmaxes of the image and of its mirror image; computed by hand here
    from two plain test runs (one on mirrored images)."""
    from mmengine.dataset import pseudo_collate
    from mmengine.structures import PixelData
    from mmseg.evaluation import IoUMetric

    from repvgg_seg.config import as_config
    from repvgg_seg.engines import load_engine
    from repvgg_seg.evaluation.windows import build_split
    from repvgg_seg.runs import run_test, setup_test_cfg
    flip_tta = [
        dict(type='LoadImageFromFile'),
        dict(type='TestTimeAug', transforms=[
            [dict(type='Resize', scale=(512, 256), keep_ratio=True)],
            [dict(type='RandomFlip', prob=0., direction='horizontal'),
             dict(type='RandomFlip', prob=1., direction='horizontal')],
            [dict(type='LoadAnnotations')], [dict(type='PackSegInputs')]])]
    cfg = setup_test_cfg(tiny_trained['config'], tiny_trained['checkpoint'],
                         work_dir=str(tmp_path), engine=engine, tta=True,
                         cfg_options=dict(tiny_trained['options'],
                                          tta_pipeline=flip_tta))
    assert cfg.model.type == 'SegTTAModel'
    tta = run_test(cfg)

    probs, samples = [], []
    for flip in (False, True):
        view = as_config(tiny_trained['config'], dict(
            tiny_trained['options'],
            **{'test_dataloader.dataset.pipeline': _view_pipeline(flip)}))
        model = load_engine(view, tiny_trained['checkpoint'], engine)
        dataset = build_split(view, 'test', annotations=True)
        outs = []
        for index in range(len(dataset)):
            with torch.no_grad():
                out = model.test_step(pseudo_collate([dataset[index]]))[0]
            outs.append(out)
        probs.append([o.seg_logits.data.softmax(0) for o in outs])
        if not flip:
            samples = outs
    metric = IoUMetric(iou_metrics=['mIoU'])
    metric.dataset_meta = dataset.metainfo
    for sample, p0, p1 in zip(samples, *probs):
        sample.pred_sem_seg = PixelData(data=((p0 + p1) / 2).argmax(0)[None])
        metric.process([], [sample.to_dict()])
    by_hand = metric.compute_metrics(metric.results)
    assert float(tta['mIoU']) == pytest.approx(by_hand['mIoU'], abs=0.01)
    assert float(tta['aAcc']) == pytest.approx(by_hand['aAcc'], abs=0.01)


def test_tta_multiscale_runs_fused(tiny_trained, tmp_path, capsys):
    """The config's multi-scale + flip TTA (12 views) runs on the fused
    model and gives the unfused model's metrics: fusing is exact to ~1e-6
    in the logits, so at most an argmax tie flips, and 0.01 points of mIoU
    (the tool rounds to 2 decimals) allow for that."""
    fused = _test_miou(tiny_trained, tmp_path, capsys, '--tta', '--fuse')
    unfused = _test_miou(tiny_trained, tmp_path, capsys, '--tta')
    assert 0 < fused['mIoU'] <= 100
    for key in ('aAcc', 'mIoU', 'mAcc'):
        assert fused[key] == pytest.approx(unfused[key], abs=0.01), key


def test_tta_without_tta_pieces_is_one_line(tiny_trained, tmp_path,
                                            capsys):
    code, err = run_tool(
        'test', tiny_trained['config'], tiny_trained['checkpoint'], '--tta',
        '--work-dir', str(tmp_path), '--cfg-options', 'tta_model=None',
        *[f'{k}={v}' for k, v in tiny_trained['options'].items()],
        capsys=capsys)
    assert code == 2
    assert 'error: --tta needs' in err


def test_engine_hook_is_the_one_test_hook(tiny_trained, tmp_path):
    from repvgg_seg.runs import setup_test_cfg
    for engine, expected in (('torch', None), ('fused', 'fused'),
                             ('winograd', 'winograd')):
        cfg = setup_test_cfg(tiny_trained['config'],
                             tiny_trained['checkpoint'],
                             work_dir=str(tmp_path), engine=engine,
                             cfg_options=tiny_trained['options'])
        hooks = [h for h in cfg.custom_hooks if h['type'] == 'EngineHook']
        assert [h['engine'] for h in hooks] == ([expected] if expected
                                                else [])
        assert cfg.load_from == tiny_trained['checkpoint']
    # --fuse is --engine fused
    cfg = setup_test_cfg(tiny_trained['config'], tiny_trained['checkpoint'],
                         work_dir=str(tmp_path), fuse=True,
                         cfg_options=tiny_trained['options'])
    assert cfg.custom_hooks[-1]['engine'] == 'fused'


def test_a_test_run_keeps_the_work_dirs_training_config(tiny_trained,
                                                        capsys):
    """tools/test.py in the training work dir: the config there stays the
    one that trained the model (tools take it as is); the test run's own
    config goes to its timestamped folder."""
    import glob

    from repvgg_seg.config import load_config
    work_dir = tiny_trained['work_dir']
    saved = osp.join(work_dir, osp.basename(tiny_trained['config']))
    before = open(saved).read()
    assert load_config(saved).train_dataloader is not None
    runs_before = set(glob.glob(osp.join(work_dir, '2*')))
    code, err = run_tool(
        'test', saved, tiny_trained['checkpoint'], '--work-dir', work_dir,
        '--cfg-options', *[f'{k}={v}' for k, v in
                           tiny_trained['options'].items()], capsys=capsys)
    assert code == 0, err
    assert open(saved).read() == before
    new_runs = set(glob.glob(osp.join(work_dir, '2*'))) - runs_before
    assert len(new_runs) == 1
    dumped = osp.join(new_runs.pop(), osp.basename(saved))
    assert load_config(dumped).train_dataloader is None


def test_tta_on_an_openvino_ir_in_slide_mode(tiny_trained, tmp_path,
                                             capsys):
    """--tta --engine openvino with a static 192x192 IR and 192-px slide
    windows: the downscaled views give smaller windows, which are padded to
    the IR's size and their logits cropped back (the padded window's
    logits are the torch model's on the zero-padded window); the TTA
    metrics equal onnxruntime's on the same static model (another runtime,
    the same windows: float noise only)."""
    pytest.importorskip('openvino')
    pytest.importorskip('onnxruntime')
    import json

    import torch.nn.functional as F

    from repvgg_seg.engines import load_engine
    slide = {'model.test_cfg.mode': 'slide',
             'model.test_cfg.crop_size': (192, 192),
             'model.test_cfg.stride': (128, 128)}
    options = dict(tiny_trained['options'], **slide)
    onnx = str(tmp_path / 'model.onnx')
    code, err = run_tool('export_onnx', tiny_trained['config'],
                         tiny_trained['checkpoint'], onnx, '--shape', '192',
                         '192', '--openvino', '--cfg-options',
                         *[f'{k}={v}' for k, v in options.items()],
                         capsys=capsys)
    assert code == 0, err
    ir = onnx[:-len('.onnx')] + '.xml'

    model = load_engine(tiny_trained['config'], ir, 'openvino',
                        cfg_options=options)
    fused = load_engine(tiny_trained['config'], tiny_trained['checkpoint'],
                        'fused', cfg_options=options)
    window = torch.randn(1, 3, 128, 160,
                         generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = model.encode_decode(window, [dict(img_shape=(128, 160))])
        want = fused.encode_decode(F.pad(window, (0, 32, 0, 64)),
                                   [dict(img_shape=(192, 192))])
    assert got.shape == (1, 19, 128, 160)
    assert relative_error(want[:, :, :128, :160], got) <= 1e-4

    metrics = {}
    for engine, weights in (('openvino', ir), ('onnxruntime', onnx)):
        out = tmp_path / f'{engine}.json'
        work_dir = tmp_path / engine
        code, err = run_tool(
            'test', tiny_trained['config'], weights, '--tta', '--engine',
            engine, '--work-dir', str(work_dir), '--out-json', str(out),
            '--cfg-options', *[f'{k}={v}' for k, v in options.items()],
            capsys=capsys)
        assert code == 0, err
        log = ''.join(open(p).read() for p in work_dir.glob('*/*.log'))
        assert 'windows smaller than its 192x192 input are padded to it' \
            in log
        metrics[engine] = json.loads(out.read_text())
    for key in ('aAcc', 'mIoU'):
        assert metrics['openvino'][key] == pytest.approx(
            metrics['onnxruntime'][key], abs=0.05)


@pytest.mark.parametrize('engine,device,expected', [
    ('torch', 'cuda', 'cuda'), ('fused', 'cuda:1', 'cuda:1'),
    ('onnxruntime', 'cuda:0', 'cuda:0'), ('openvino', 'cuda:1', 'cpu'),
    ('winograd', 'cuda', 'cpu'), ('fused', 'cpu', 'cpu')])
def test_an_engine_runs_where_the_model_is_when_it_can(engine, device,
                                                       expected):
    from repvgg_seg.engines import get_engine
    assert get_engine(engine).device_for(device) == expected


@pytest.mark.parametrize('engine,moved', [('fused', None),
                                          ('onnxruntime', None),
                                          ('openvino', 'cpu')])
def test_the_test_hook_runs_the_engine_on_the_runners_device(
        monkeypatch, engine, moved):
    """tools/test.py --engine: the Runner put the model on cuda:1 (its
    LOCAL_RANK); the engine's RunOptions say so (a CPU-only engine gets the
    model moved to the CPU instead)."""
    from types import SimpleNamespace

    from repvgg_seg.engines import hooks
    attached, moves = [], []
    model = SimpleNamespace(
        parameters=lambda: iter([SimpleNamespace(
            device=torch.device('cuda', 1))]),
        to=moves.append)
    on_engine = object()

    def attach(m, engine, weights, options, load):
        attached.append(options)
        return on_engine

    monkeypatch.setattr(hooks, 'attach_engine', attach)
    hook = hooks.EngineHook(engine=engine, precision='fp16')
    runner = SimpleNamespace(model=model)
    hook.before_test(runner)
    assert attached[0].device == (moved or 'cuda:1')
    assert attached[0].precision == 'fp16'
    assert moves == ([moved] if moved else [])
    assert runner.model is on_engine  # the test loop runs the engine


@pytest.mark.gpu
def test_gpu_test_tool_fused_fp16_and_onnxruntime_on_cuda(tiny_trained,
                                                          tmp_path, capsys):
    """tools/test.py on a GPU: the fused model in fp16 (weights and inputs
    on the Runner's device) and onnxruntime (its CUDA provider when it has
    one) give the fp32 mIoU."""
    fp32 = _test_miou(tiny_trained, tmp_path, capsys)
    fp16 = _test_miou(tiny_trained, tmp_path, capsys, '--engine', 'fused',
                      '--precision', 'fp16')
    assert fp16['mIoU'] == pytest.approx(fp32['mIoU'], abs=0.5)
    ort = pytest.importorskip('onnxruntime')
    if 'CUDAExecutionProvider' in ort.get_available_providers():
        onnx = _test_miou(tiny_trained, tmp_path, capsys, '--engine',
                          'onnxruntime')
        assert onnx['mIoU'] == pytest.approx(fp32['mIoU'], abs=0.01)


def test_onnxruntime_defaults_to_a_gpu_only_with_its_cuda_provider(
        monkeypatch):
    """The onnxruntime package has no CUDA provider: on a GPU machine its
    default stays the CPU (a CUDA default would fail); with the provider
    (onnxruntime-gpu) it is the GPU."""
    ort = pytest.importorskip('onnxruntime')
    from repvgg_seg.engines import get_engine
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    engine = get_engine('onnxruntime')
    monkeypatch.setattr(ort, 'get_available_providers',
                        lambda: ['CPUExecutionProvider'])
    assert engine.default_device() == 'cpu'
    monkeypatch.setattr(ort, 'get_available_providers',
                        lambda: ['CUDAExecutionProvider',
                                 'CPUExecutionProvider'])
    assert engine.default_device() == 'cuda'
    assert get_engine('openvino').default_device() == 'cpu'
