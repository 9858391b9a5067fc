"""INT8 on the CPU: NNCF quantization to an OpenVINO IR, the IR evaluated
in mmseg's test loop, INT8 benchmark rows, RepVGG's grouped convs in INT8
(constant folding before NNCF), and the tool's refusals.

Small shapes throughout: the tiny trained A0 of ``tiny_trained`` (test
images 256x512, whole inference) and 64x64 grouped models."""
import json
import os
import os.path as osp
import re
import sys

import numpy as np
import pytest
import torch

from tests.conftest import DEMO_CONFIG as DEMO
from tests.helpers import TINY_ARCHS, error_line, randomize_bn, run_tool
from tests.quantization.common import data_options, option_args

ov = pytest.importorskip('openvino')
pytest.importorskip('nncf')


@pytest.fixture(autouse=True)
def fresh_loggers():
    """Log lines of the library calls here go to this test's stderr, not
    to the (closed) stream of an earlier tool run."""
    from mmengine.logging import MMLogger
    MMLogger._instance_dict.clear()


# --------------------------------------------------------------------------
# the grouped-layer fix: constant folding before NNCF


def grouped_module(groups: int, dilation=None):
    """A small fused PSPNet-RepVGG (LogitsModule) whose layers 2, 4 and 6
    are grouped 3x3 convs (one of them dilated with ``dilation``), with
    non-trivial BN statistics before fusing."""
    from repvgg_seg.apis import LogitsModule, build_model
    from repvgg_seg.models.convert import fuse_for_deploy
    arch = dict(TINY_ARCHS['int8'],
                group_layer_map={2: groups, 4: groups, 6: groups},
                _delete_=True)
    model = build_model(DEMO, cfg_options={
        'model.backbone.arch': arch, 'model.backbone.dilation': dilation,
        'model.decode_head.in_channels': 256,
        'model.decode_head.channels': 16,
        'model.auxiliary_head.in_channels': 128})
    randomize_bn(model, seed=groups)
    fuse_for_deploy(model)
    return LogitsModule(model).eval()


def export(module, tmp_path, shape=(64, 64)):
    from repvgg_seg.deploy.export import export_onnx_file
    path = str(tmp_path / 'model.onnx')
    export_onnx_file(module, path, (1, 3) + shape)
    return path


def group_conv_weight_sources(model):
    """The op type feeding each GroupConvolution's weight port."""
    return [op.input_value(1).get_node().get_type_name()
            for op in model.get_ordered_ops()
            if op.get_type_name() == 'GroupConvolution']


@pytest.mark.parametrize('groups,dilation', [
    (2, None), (4, None), (2, 'last_two_stages'), (4, 'last_two_stages')])
def test_constant_folding_keeps_the_fp32_function(groups, dilation,
                                                  tmp_path):
    """Folding the exported model's constants makes every grouped conv's
    weight a constant (what NNCF quantizes) and changes no output: the
    same logits as the model as read, and as torch."""
    from repvgg_seg.backends.openvino import (constant_folded, openvino_infer,
                                              openvino_read)
    from repvgg_seg.models.convert import compare_outputs
    module = grouped_module(groups, dilation)
    path = export(module, tmp_path)
    read = openvino_read(path)
    folded = constant_folded(openvino_read(path))
    assert group_conv_weight_sources(folded) == ['Constant'] * 3
    x = torch.randn(2, 1, 3, 64, 64, generator=torch.Generator()
                    .manual_seed(0))
    for xi in x:
        before = openvino_infer(read)(xi)
        after = openvino_infer(folded)(xi)
        assert compare_outputs([before], [after])['max_rel_diff'] <= 1e-5
        with torch.no_grad():
            reference = module(xi)
        assert compare_outputs([reference], [after])['max_rel_diff'] <= 1e-4


@pytest.mark.parametrize('groups,dilation', [(2, 'last_two_stages'),
                                             (4, None)])
def test_every_conv_of_a_grouped_model_runs_in_int8(groups, dilation,
                                                    tmp_path):
    """NNCF on the model as OpenVINO reads the export: every conv, the
    grouped ones included, runs on an INT8 kernel (OpenVINO's choice), and
    the INT8 logits stay close to torch's."""
    from repvgg_seg.backends.openvino import (CONV_NODE_TYPES,
                                              openvino_compile,
                                              openvino_conv_precisions,
                                              openvino_infer,
                                              openvino_kernels,
                                              openvino_read)
    from repvgg_seg.evaluation.agreement import agreement
    from repvgg_seg.quantization.ptq import quantize_model
    module = grouped_module(groups, dilation)
    path = export(module, tmp_path)
    gen = torch.Generator().manual_seed(0)
    calibration = [torch.randn(1, 3, 64, 64, generator=gen)
                   for _ in range(3)]
    quantized = quantize_model(openvino_read(path), calibration)
    compiled = openvino_compile(quantized, 'int8', threads=1)
    profile = openvino_conv_precisions(compiled)
    # the 3 grouped convs among them, each on an INT8 kernel
    assert sum(profile['kernels']['GroupConvolution'].values()) == 3
    assert all('i8' in kernel.lower()
               for kernel in profile['kernels']['GroupConvolution'])
    assert profile['convs'] >= 10
    assert profile['int8_convs'] == profile['convs'], profile['kernels']
    # the node types and kernels chosen when it compiled are those a
    # profiled inference reports
    import openvino as ov
    profiled = ov.Core().compile_model(quantized, 'CPU', {
        'PERF_COUNT': True, 'INFERENCE_PRECISION_HINT': 'f32',
        'INFERENCE_NUM_THREADS': 1})
    request = profiled.create_infer_request()
    request.infer({0: calibration[0].numpy()})
    ran = [(node.node_name, node.node_type, node.exec_type)
           for node in request.get_profiling_info()
           if node.node_type in CONV_NODE_TYPES]
    assert ran == [node for node in openvino_kernels(compiled)
                   if node[1] in CONV_NODE_TYPES]
    assert list(profile['layers']) == [name for name, _, _ in ran]
    # measured 0.06-0.14 relative and 92-94% of the pixels (random weights)
    with torch.no_grad():
        reference = module(calibration[0])
    result = agreement(reference, openvino_infer(quantized, 'int8',
                                                 threads=1)(calibration[0]))
    assert result['max_rel_error'] <= 0.3
    assert result['argmax_agreement_pct'] >= 85


# --------------------------------------------------------------------------
# quantize -> test round trip on the tiny trained model


@pytest.fixture(scope='module')
def int8_ir(tiny_trained, synthetic_root, tmp_path_factory):
    """The tiny model quantized by tools/quantize.py (4 train images):
    ``dict(xml, report, printed, options)``."""
    out = tmp_path_factory.mktemp('int8')
    options = data_options(tiny_trained, synthetic_root)
    code, err = run_tool(
        'quantize', tiny_trained['config'], tiny_trained['checkpoint'],
        str(out / 'model.xml'), '--calib-images', '4', '--min-agreement',
        '90', '--out-json', str(out / 'report.json'),
        *option_args(options))
    assert code == 0, err
    return dict(xml=str(out / 'model.xml'), options=options,
                report=json.loads((out / 'report.json').read_text()))


def test_quantize_report(int8_ir, capsys):
    """The report of a tool run: train calibration, val held out, whole 256x512
    images, agreement, every conv in INT8; the IR written has the input size
    and FakeQuantize ops."""
    report = int8_ir['report']
    assert osp.isfile(int8_ir['xml'])
    assert osp.isfile(int8_ir['xml'][:-4] + '.bin')
    # calibration on train, agreement on the (disjoint) val split
    assert (report['calib_split'], report['calib_images'],
            report['calib_windows']) == ('train', 4, 4)
    assert (report['heldout_split'], report['heldout_images'],
            report['heldout_windows']) == ('val', 2, 2)
    assert report['shape'] == [256, 512]  # whole test images, preprocessed
    assert report['windows_resized'] == 0
    assert 90 <= report['argmax_agreement_pct'] <= 100
    assert report['min_window_agreement_pct'] <= \
        report['argmax_agreement_pct']
    assert 0 < report['max_rel_error'] < 0.5
    assert report['fp32_max_rel_error'] < 1e-4
    assert report['convs'] > 20 and report['int8_convs'] == report['convs']
    assert report['seconds'] > 0
    ir = ov.Core().read_model(int8_ir['xml'])
    assert list(ir.inputs[0].get_shape()) == [1, 3, 256, 512]
    assert list(ir.outputs[0].get_shape()) == [1, 19, 256, 512]
    assert any(op.get_type_name() == 'FakeQuantize'
               for op in ir.get_ordered_ops())


def test_int8_mIoU_in_the_test_loop(int8_ir, tiny_trained, tmp_path,
                                    capsys):
    """tools/test.py --engine openvino evaluates the IR itself (its mIoU is
    that of its own predictions), within the held-out agreement of fp32's pixel
    accuracy."""
    results = {}
    for name, checkpoint, extra in (
            ('fp32', tiny_trained['checkpoint'], []),
            ('int8', int8_ir['xml'], ['--engine', 'openvino'])):
        out = tmp_path / f'{name}.json'
        code, err = run_tool(
            'test', tiny_trained['config'], checkpoint, '--work-dir',
            str(tmp_path / 'work'), '--out-json', str(out), *extra,
            *option_args(tiny_trained['options']), capsys=capsys)
        assert code == 0, err
        results[name] = json.loads(out.read_text())
    # the IR is what was evaluated: its mIoU equals that of its own
    # predictions on the val images (the engine in mmseg's test_step)
    from mmseg.evaluation import IoUMetric

    from repvgg_seg.config import as_config
    from repvgg_seg.engines import load_engine
    from repvgg_seg.evaluation.windows import build_split
    cfg = as_config(tiny_trained['config'], tiny_trained['options'])
    model = load_engine(cfg, int8_ir['xml'], 'openvino')
    dataset = build_split(cfg, 'test', annotations=True)
    metric = IoUMetric(iou_metrics=['mIoU'])
    metric.dataset_meta = dataset.metainfo
    from mmengine.dataset import pseudo_collate
    for index in range(len(dataset)):
        with torch.no_grad():
            samples = model.test_step(pseudo_collate([dataset[index]]))
        metric.process([], [s.to_dict() for s in samples])
    by_hand = metric.compute_metrics(metric.results)
    assert results['int8']['mIoU'] == pytest.approx(by_hand['mIoU'],
                                                    abs=0.01)
    # and INT8 changes few pixels: the held-out agreement bounds the
    # difference in pixel accuracy
    gap = 100 - int8_ir['report']['argmax_agreement_pct']
    assert abs(results['int8']['aAcc'] - results['fp32']['aAcc']) <= \
        gap + 0.01


def test_engine_openvino_runs_the_ir_not_a_checkpoint(int8_ir,
                                                      tiny_trained,
                                                      tmp_path):
    """The test config of an IR runs it through the EngineHook and loads no
    checkpoint."""
    from repvgg_seg.runs import setup_test_cfg
    cfg = setup_test_cfg(tiny_trained['config'], int8_ir['xml'],
                         work_dir=str(tmp_path),
                         cfg_options=tiny_trained['options'],
                         engine='openvino')
    assert cfg.load_from is None
    hook = cfg.custom_hooks[-1]
    assert hook == dict(type='EngineHook', engine='openvino',
                        weights=osp.abspath(int8_ir['xml']),
                        precision='fp32', streams=None)
    assert all(h['type'] != 'CheckpointFitHook' for h in cfg.custom_hooks)


def test_heldout_images_are_never_calibration_images(tiny_trained,
                                                     synthetic_root):
    """Held-out images follow the calibration ones in the same split, or come
    from val when calibrating on train; windows are preprocessed by the model's
    data preprocessor."""
    from repvgg_seg.apis import load_model
    from repvgg_seg.config import as_config
    from repvgg_seg.quantization.images import calibration_and_heldout
    from repvgg_seg.quantization.options import QuantizeOptions
    cfg = as_config(DEMO, data_options(tiny_trained, synthetic_root))
    model = load_model(cfg)
    calib, held, calib_from, held_from = calibration_and_heldout(
        cfg, model, QuantizeOptions(calib_images=1, calib_split='val'))
    assert (calib_from, held_from) == ('val', 'val')
    assert calib.items == [0] and held.items == [1]
    calib, held, calib_from, held_from = calibration_and_heldout(
        cfg, model, QuantizeOptions(calib_images=100))
    assert (calib_from, held_from) == ('train', 'val')
    assert calib.items == list(range(6)) and held.items == [0, 1]
    assert calib.dataset is not held.dataset
    windows = list(calib)
    assert len(windows) == 6 and calib.count() == 6
    assert all(w.shape == (1, 3, 256, 512) for w in windows)
    # the model's own data preprocessor: normalized, not 0..255
    assert -3 < float(windows[0].mean()) < 3


def test_slide_windows_are_mmseg_s(tiny_trained):
    """The calibration/held-out windows are the crops mmseg's own
    slide_inference hands to encode_decode (recorded, not re-computed)."""
    from repvgg_seg.apis import build_model
    from repvgg_seg.evaluation.windows import model_windows
    options = dict(tiny_trained['options'])
    options['model.test_cfg'] = dict(mode='slide', crop_size=(713, 713),
                                     stride=(476, 476))
    model = build_model(DEMO, cfg_options=options)
    x = torch.arange(1024 * 2048, dtype=torch.float32).view(
        1, 1, 1024, 2048).expand(1, 3, -1, -1)
    windows = model_windows(model, x)
    # Cityscapes 1024x2048, crop 713 stride 476: 2 x 4 windows, the last
    # ones aligned to the border
    assert len(windows) == 8
    assert all(tuple(w.shape) == (1, 3, 713, 713) for w in windows)
    assert torch.equal(windows[0], x[:, :, :713, :713])
    assert torch.equal(windows[1], x[:, :, :713, 476:1189])
    assert torch.equal(windows[-1], x[:, :, 311:, 1335:])
    # whole-image inference: the image itself
    options['model.test_cfg'] = dict(mode='whole')
    whole = build_model(DEMO, cfg_options=options)
    assert model_windows(whole, x)[0] is x
    # the model's own encode_decode is back afterwards
    assert 'encode_decode' not in vars(model)


def test_predictions_picture(int8_ir, tiny_trained, tmp_path):
    """The demo's predictions picture: input, ground truth, fp32 and INT8 per
    val image, and a legend with every class shown."""
    import mmcv

    from repvgg_seg.demo import draw_predictions
    out = str(tmp_path / 'predictions.png')
    draw_predictions(tiny_trained['config'], tiny_trained['checkpoint'],
                     int8_ir['xml'], out, int8_ir['options'])
    picture = mmcv.imread(out, channel_order='rgb')
    # column titles (22 px), 2 val images of 64x128 as rows of input | GT |
    # fp32 | INT8 (4 px apart), then a legend of the classes shown
    assert picture.shape[1] == 4 * 128 + 3 * 4
    legend = picture[22 + 2 * (64 + 4):]
    assert 20 <= legend.shape[0] <= 100
    from mmseg.datasets import CityscapesDataset
    palette = {tuple(c) for c in CityscapesDataset.METAINFO['palette']}
    gt = picture[22:22 + 64, 132:260].reshape(-1, 3)
    colours = {tuple(c) for c in np.unique(gt, axis=0)}
    assert colours - {(0, 0, 0)} <= palette and len(colours) > 1
    # every class colour of the ground truth has its swatch in the legend
    swatches = {tuple(c) for c in np.unique(legend.reshape(-1, 3), axis=0)}
    assert colours - {(0, 0, 0)} <= swatches


# --------------------------------------------------------------------------
# benchmark rows


def test_benchmark_int8_rows_and_peak(monkeypatch):
    """The benchmark's INT8 row (every conv in INT8, generated calibration) and
    its share of the measured INT8 peak."""
    from repvgg_seg.bench import (BenchmarkOptions, benchmark, format_table,
                                  peak)

    # the peak's kernels shrunk from 1536^3 / 512->512 at 90x90 (seconds to
    # quantize)
    monkeypatch.setattr(peak, 'PEAK_SIZES', peak.KernelSizes(
        matmul=64, conv1x1=(64, 16), conv3x3=(64, 16)))
    result = benchmark([DEMO], BenchmarkOptions(
        fuse='yes', shape=(64, 64), engines=('torch', 'openvino'),
        precisions=('fp32', 'int8'), warmup=0, iters=1, rounds=1,
        threads=1, peak=True))
    rows = {(r['engine'], r['precision']): r for r in result['rows']}
    assert set(rows) == {('torch', 'fp32'), ('openvino', 'fp32'),
                         ('openvino', 'int8')}
    int8 = rows[('openvino', 'int8')]
    assert int8['convs'] > 20 and int8['int8_convs'] == int8['convs']
    assert int8['calibration_generated'] is True
    assert int8['agreement']['max_rel_error'] < 0.5
    # the INT8 peak: the fastest of the quantized matmul, 1x1 and 3x3 conv
    peak8 = result['peak']['int8']
    assert set(peak8['kernels']) == {'matmul', 'conv1x1', 'conv3x3'}
    assert peak8['gflops_per_s'] == max(
        k['gflops_per_s'] for k in peak8['kernels'].values())
    assert int8['peak_kernel'] == peak8['kernel']
    assert int8['peak_pct'] == pytest.approx(
        100 * int8['gflops_per_s'] / peak8['gflops_per_s'])
    assert int8['ref_conv_key'] == 'int8-nchw' and int8['ref_conv_pct'] > 0
    assert set(result['reference_conv']) == {'fp32-nchw', 'int8-nchw'}
    assert rows[('openvino', 'fp32')]['peak_kernel'] == \
        result['peak']['fp32']['kernel']
    notes = result['setup']['notes']
    assert any('skipped torch/int8' in n for n in notes)
    assert any('generated images' in n for n in notes)
    table = format_table(result)
    assert 'INT8 convs' in table and f'{int8["convs"]}/{int8["convs"]}' \
        in table
    assert 'peak kernel' in table and peak8['kernel'] in table


# --------------------------------------------------------------------------
# bad input: one clear line each, nothing written


def quantize_args(trained, out, *extra, options=None):
    return (trained['config'], trained['checkpoint'], str(out), *extra,
            *option_args(options or trained['options']))


def test_quantize_refuses_zero_calibration_images(tiny_trained, tmp_path,
                                                  capsys):
    """--calib-images 0 is one error line, and nothing is written."""
    code, err = run_tool('quantize', *quantize_args(
        tiny_trained, tmp_path / 'm.xml', '--calib-images', '0'),
        capsys=capsys)
    assert code == 2
    assert '--calib-images must be at least 1, got 0' in error_line(err)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize('make', ['missing', 'empty'])
def test_quantize_refuses_a_missing_or_empty_split(make, tiny_trained,
                                                   synthetic_root, tmp_path,
                                                   capsys):
    """A calibration split that is missing or empty is one error line, and
    nothing is written."""
    root = tmp_path / 'data'
    if make == 'empty':
        (root / 'leftImg8bit' / 'train').mkdir(parents=True)
        (root / 'gtFine' / 'train').mkdir(parents=True)
    out = tmp_path / 'out'
    out.mkdir()
    options = data_options(tiny_trained, synthetic_root, **{
        'train_dataloader.dataset.data_root': str(root)})
    code, err = run_tool('quantize', *quantize_args(
        tiny_trained, out / 'm.xml', options=options), capsys=capsys)
    assert code == 2
    line = error_line(err)
    assert 'the train split has no images' in line
    assert ('is missing' in line) == (make == 'missing')
    assert os.listdir(out) == []


def test_quantize_refuses_low_agreement(tiny_trained, synthetic_root,
                                        tmp_path, capsys):
    """An INT8 model below --min-agreement is one error line with the
    agreement measured, and nothing is written."""
    # a real quantization whose held-out agreement cannot reach 100%
    # (INT8 flips near-tie pixels of this barely trained model)
    options = data_options(tiny_trained, synthetic_root)
    code, err = run_tool('quantize', *quantize_args(
        tiny_trained, tmp_path / 'm.xml', '--calib-images', '1',
        '--min-agreement', '100', '--out-json', str(tmp_path / 'r.json'),
        options=options), capsys=capsys)
    assert code == 2
    line = error_line(err)
    assert re.search(r'agrees with fp32 torch on 9\d\.\d\d% of the pixels '
                     r'of 2 held-out val images', line), line
    assert 'below --min-agreement 100%; nothing was written' in line
    assert os.listdir(tmp_path) == []


def test_quantize_needs_force_for_an_existing_ir(int8_ir, tiny_trained,
                                                 capsys):
    """An existing IR is kept unless --force."""
    before = os.path.getmtime(int8_ir['xml'])
    code, err = run_tool('quantize', *quantize_args(
        tiny_trained, int8_ir['xml']), capsys=capsys)
    assert code == 2
    assert 'already exists; pass --force' in error_line(err)
    assert os.path.getmtime(int8_ir['xml']) == before


@pytest.mark.parametrize('package', ['nncf', 'openvino'])
def test_quantize_without_the_packages(package, tiny_trained, tmp_path,
                                       capsys, monkeypatch):
    """Without nncf or openvino the tool says which package is missing."""
    monkeypatch.setitem(sys.modules, package, None)  # import fails
    code, err = run_tool('quantize', *quantize_args(
        tiny_trained, tmp_path / 'm.xml'), capsys=capsys)
    assert code == 2
    assert (f'INT8 quantization needs {package}: {package} is not installed'
            in error_line(err))
    assert os.listdir(tmp_path) == []


def test_test_tool_refuses_an_ir_with_engine_torch(int8_ir, tiny_trained,
                                                   tmp_path, capsys):
    """An IR given to the torch engine is one error line naming --engine
    openvino."""
    code, err = run_tool('test', tiny_trained['config'], int8_ir['xml'],
                         '--engine', 'torch', '--work-dir',
                         str(tmp_path / 'w'),
                         *option_args(tiny_trained['options']),
                         capsys=capsys)
    assert code == 2
    line = error_line(err)
    assert 'the torch engine takes a PyTorch checkpoint' in line
    assert 'is an OpenVINO IR (.xml): run it with --engine openvino' in line


def test_test_tool_int8_from_a_checkpoint_needs_calibration(
        tiny_trained, tmp_path, capsys):
    """INT8 from a checkpoint in tools/test.py needs calibration inputs: one
    error line."""
    code, err = run_tool('test', tiny_trained['config'],
                         tiny_trained['checkpoint'], '--engine', 'openvino',
                         '--precision', 'int8', '--work-dir',
                         str(tmp_path / 'w'),
                         *option_args(tiny_trained['options']),
                         capsys=capsys)
    assert code == 2
    assert 'INT8 from a checkpoint needs calibration inputs' in \
        error_line(err)


def test_test_tool_without_openvino(int8_ir, tiny_trained, tmp_path, capsys,
                                    monkeypatch):
    """The openvino engine without openvino says the package is missing."""
    monkeypatch.setitem(sys.modules, 'openvino', None)
    code, err = run_tool('test', tiny_trained['config'], int8_ir['xml'],
                         '--engine', 'openvino', '--work-dir',
                         str(tmp_path / 'w'),
                         *option_args(tiny_trained['options']),
                         capsys=capsys)
    assert code == 2
    assert ('the openvino engine needs openvino: openvino is not installed'
            in error_line(err))


def fp32_ir(tmp_path, shape, cfg_options=None):
    """An fp32 IR of the tiny demo model (random weights)."""
    from repvgg_seg.apis import LogitsModule, build_model
    from repvgg_seg.backends.openvino import write_openvino_ir
    module = LogitsModule(build_model(DEMO, cfg_options=cfg_options))
    module.eval()
    path = str(tmp_path / 'other.xml')
    write_openvino_ir(export(module, tmp_path, shape), path)
    return path


@pytest.mark.parametrize('case', ['classes', 'shape'])
def test_test_tool_refuses_an_ir_that_does_not_fit(case, tiny_trained,
                                                   tmp_path, capsys):
    """An IR with other classes, or another input size than the images, is one
    error line saying which."""
    options = dict(tiny_trained['options'])
    if case == 'classes':
        options.update({'model.decode_head.num_classes': 5,
                        'model.auxiliary_head.num_classes': 5})
        ir = fp32_ir(tmp_path, (256, 512), options)
        expected = "outputs 5 classes but the config's model has 19"
    else:
        ir = fp32_ir(tmp_path, (64, 64), options)
        expected = ('takes 64x64 inputs, but it is given a 256x512 image '
                    '(whole inference)')
    code, err = run_tool('test', tiny_trained['config'], ir, '--engine',
                         'openvino', '--work-dir', str(tmp_path / 'w'),
                         *option_args(tiny_trained['options']),
                         capsys=capsys)
    assert code == 2
    assert expected in error_line(err)
