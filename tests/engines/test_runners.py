"""The two types every engine goes through: the runner
(:class:`repvgg_seg.backends.base.Runner`: ``run(x) -> logits`` with its
info, shapes, concurrency and labels capability) and the segmentor on a
runner (:class:`repvgg_seg.backends.segmentor.EngineSegmentor`: an mmseg
segmentor, no method replaced on an instance).

The tiny trained model of the suite; 32x64 inputs."""
import pytest
import torch

from repvgg_seg.backends.base import Runner
from repvgg_seg.errors import InputError, UnavailableError

from tests.helpers import relative_error

SHAPE = (1, 3, 32, 64)


@pytest.fixture(scope='module')
def fused_logits(tiny_trained):
    """The tiny trained model fused, as a LogitsModule."""
    from repvgg_seg.apis import LogitsModule, load_model
    from repvgg_seg.models.convert import fuse_for_deploy
    model = load_model(tiny_trained['config'], tiny_trained['checkpoint'],
                       cfg_options=tiny_trained['options'])
    return LogitsModule(fuse_for_deploy(model)).eval()


@pytest.fixture(scope='module')
def onnx_file(fused_logits, tmp_path_factory):
    pytest.importorskip('onnxruntime')
    from repvgg_seg.deploy.export import export_onnx_file
    path = str(tmp_path_factory.mktemp('runners') / 'model.onnx')
    export_onnx_file(fused_logits, path, SHAPE)
    return path


def _inputs(count=2, seed=0):
    return torch.randn(count, *SHAPE[1:],
                       generator=torch.Generator().manual_seed(seed))


def test_exported_runners_say_their_shapes_info_and_capabilities(
        onnx_file, fused_logits):
    """onnxruntime and OpenVINO (plain, and with its labels output): each
    is a Runner with the file's static shapes, its facts in ``info``, one
    call at a time, and labels only where its graph computes them."""
    pytest.importorskip('openvino')
    from repvgg_seg.backends.onnxruntime import (OnnxRuntimeRunner,
                                                 onnxruntime_infer)
    from repvgg_seg.backends.openvino import OpenVINORunner, openvino_infer
    from repvgg_seg.engines import RunOptions, get_engine
    x = _inputs(1)
    with torch.no_grad():
        expected = fused_logits(x)
    ort = get_engine('onnxruntime').file_runner(onnx_file,
                                                RunOptions(threads=1))
    plain = get_engine('openvino').file_runner(onnx_file, RunOptions())
    labelled = get_engine('openvino').file_runner(
        onnx_file, RunOptions(labels=True))
    for run in (ort, plain, labelled, onnxruntime_infer(onnx_file),
                openvino_infer(onnx_file)):
        assert isinstance(run, Runner)
        assert run.input_shape == [1, 3, 32, 64]
        assert run.output_shape == [1, 19, 32, 64]
        assert run.concurrency == 1
        assert relative_error(expected, run(x)) < 1e-4
    assert isinstance(ort, OnnxRuntimeRunner)
    assert ort.info == {'provider': 'CPUExecutionProvider'}
    assert ort.provider == 'CPUExecutionProvider'
    # one OpenVINO runner type, the engine's and the backend's function's
    assert type(plain) is type(openvino_infer(onnx_file)) is OpenVINORunner
    assert plain.info == {'weights': onnx_file}
    assert [r.has_labels for r in (ort, plain, labelled)] == [False, False,
                                                               True]
    for run in (ort, plain):
        with pytest.raises(InputError, match='labels'):
            run.labels(x)
    labels = labelled.labels(x)
    assert labels.dtype == torch.int64 and labels.shape == (1, 32, 64)
    assert torch.equal(labels, labelled(x).argmax(1))


def test_torch_and_winograd_runners_take_any_shape(fused_logits):
    from repvgg_seg.engines import RunOptions, get_engine
    from repvgg_seg.engines.base import TorchRunner
    x = _inputs()
    with torch.no_grad():
        expected = fused_logits(x)
    run = get_engine('torch').runner(fused_logits, SHAPE, RunOptions(), '')
    assert isinstance(run, TorchRunner)
    assert (run.input_shape, run.output_shape, run.info) == (None, None, {})
    assert not run.has_labels and run.concurrency == 1
    assert torch.equal(run(x), expected)
    try:
        get_engine('winograd').require()
    except UnavailableError:
        return  # no NNPACK in this PyTorch build
    wino = get_engine('winograd').runner(fused_logits, SHAPE,
                                         RunOptions(tune=False), '')
    assert isinstance(wino, TorchRunner) and wino.input_shape is None
    assert wino.info['winograd_convs'] == len(wino.info['winograd_plan'])
    assert wino.info['winograd_nnpack_convs'] == wino.info['winograd_convs']
    assert relative_error(expected, wino(x)) < 1e-4


# --------------------------------------------------------------------------
# the segmentor on an engine


def _test_data(tiny_trained):
    from mmengine.dataset import pseudo_collate

    from repvgg_seg.config import as_config
    from repvgg_seg.evaluation.windows import build_split
    cfg = as_config(tiny_trained['config'], tiny_trained['options'])
    dataset = build_split(cfg, 'test')
    return pseudo_collate([dataset[i] for i in range(len(dataset))])


def _no_method_on_the_instance(model):
    assert 'encode_decode' not in vars(model)
    assert all('encode_decode' not in vars(m) for m in model.modules())


@pytest.mark.parametrize('engine', ['torch', 'onnxruntime'])
def test_engine_segmentor_is_an_mmseg_segmentor(engine, tiny_trained):
    """load_engine gives a BaseSegmentor (an EncoderDecoder wrapping the
    loaded one) whose predict and test_step give the torch model's
    labels; torch's own fp32 forward is mmseg's exactly."""
    if engine == 'onnxruntime':
        pytest.importorskip('onnxruntime')
    from mmseg.models.segmentors import BaseSegmentor, EncoderDecoder

    from repvgg_seg.apis import load_model
    from repvgg_seg.backends.segmentor import EngineSegmentor
    from repvgg_seg.engines import load_engine
    reference = load_model(tiny_trained['config'],
                           tiny_trained['checkpoint'],
                           cfg_options=tiny_trained['options'])
    model = load_engine(tiny_trained['config'], tiny_trained['checkpoint'],
                        engine, cfg_options=tiny_trained['options'])
    assert isinstance(model, EngineSegmentor)
    assert isinstance(model, BaseSegmentor)
    assert isinstance(model, EncoderDecoder)
    assert model.engine_info['engine'] == engine
    assert model.out_channels == reference.out_channels == 19
    assert model.data_preprocessor is model.segmentor.data_preprocessor
    _no_method_on_the_instance(model)
    data = _test_data(tiny_trained)
    with torch.no_grad():
        expected = reference.test_step(data)
        got = model.test_step(data)
        inputs = model.data_preprocessor(data, False)
        predicted = model.predict(inputs['inputs'], inputs['data_samples'])
    assert len(got) == len(expected) == 2
    for ours, theirs, pred in zip(got, expected, predicted):
        want = theirs.seg_logits.data
        if engine == 'torch':
            assert torch.equal(ours.seg_logits.data, want)
        assert relative_error(want, ours.seg_logits.data) < 1e-4
        same = ours.pred_sem_seg.data == theirs.pred_sem_seg.data
        assert same.float().mean() >= 0.999
        assert torch.equal(pred.pred_sem_seg.data, ours.pred_sem_seg.data)
    if engine == 'torch':
        assert model.engine_forward is None
    else:
        assert model.engine_forward.runners  # made at the first window
        with pytest.raises(NotImplementedError, match='encode_decode'):
            model.extract_feat(inputs['inputs'])


def test_attaching_again_wraps_the_segmentor_not_the_wrapper(tiny_trained):
    from repvgg_seg.engines import attach_engine, load_engine
    model = load_engine(tiny_trained['config'], tiny_trained['checkpoint'],
                        'torch', cfg_options=tiny_trained['options'])
    fused = attach_engine(model, 'fused')
    assert fused.segmentor is model.segmentor
    assert fused.engine_info['engine'] == 'fused'
    _no_method_on_the_instance(fused)


def test_tta_wraps_the_engine_segmentor(tiny_trained):
    """mmseg's SegTTAModel around an engine segmentor: a flip pair of one
    image gives the mean of the two softmaxes, computed on the engine."""
    from mmengine.structures import PixelData
    from mmseg.models import SegTTAModel

    from repvgg_seg.engines import load_engine
    model = load_engine(tiny_trained['config'], tiny_trained['checkpoint'],
                        'fused', cfg_options=tiny_trained['options'])
    tta = SegTTAModel(module=model)
    data = _test_data(tiny_trained)
    with torch.no_grad():
        plain = model.test_step(data)[0]
    flipped = dict(inputs=[data['inputs'][0].flip(-1)],
                   data_samples=[data['data_samples'][0].clone()])
    flipped['data_samples'][0].set_metainfo(dict(
        flip=True, flip_direction='horizontal'))
    views = dict(inputs=[[data['inputs'][0]], flipped['inputs']],
                 data_samples=[[data['data_samples'][0]],
                               flipped['data_samples']])
    with torch.no_grad():
        merged = tta.test_step(views)[0]
        mirror = model.test_step(flipped)[0]
    mean = (plain.seg_logits.data.softmax(0)
            + mirror.seg_logits.data.softmax(0)) / 2
    assert isinstance(merged.pred_sem_seg, PixelData)
    assert torch.equal(merged.pred_sem_seg.data[0], mean.argmax(0))
