"""INT8 with a held-out metric: equalization in the tool,
accuracy-controlled quantization (``--max-drop``), layers kept in fp32 by
name (``--keep-fp32``), the per-layer sensitivity table, the conv names
across torch, ONNX and OpenVINO, and the bad inputs of those options.

The model is the suite's tiny trained PSPNet-RepVGG-A0 (10 iterations),
quantized at 64x128 (its 256x512 test images resized: small and fast), the
planted case made from it with outliers a per-tensor INT8 scale cannot
hold."""
import json
import os
import os.path as osp
import re
import shutil

import pytest
import torch

from tests.conftest import DEMO_CONFIG
from tests.helpers import error_line, load_tool, run_tool
from tests.quantization.common import data_options, option_args

ov = pytest.importorskip('openvino')
pytest.importorskip('nncf')

SHAPE = ('--shape', '64', '128')
#: stages 0-3 of A0 (21 layers)
KEPT = 'backbone.stage[0-3]*'


def quantize(model, out, *extra, options, capsys=None):
    """``tools/quantize.py`` on ``model`` (``dict(config, checkpoint)``)
    at :data:`SHAPE` with 4 calibration images: ``(code, report or
    None, stderr)``."""
    report = osp.join(osp.dirname(str(out)), 'report.json')
    code, err = run_tool(
        'quantize', model['config'], model['checkpoint'], str(out), *SHAPE,
        '--calib-images', '4', '--min-agreement', '0', '--out-json', report,
        *extra, *option_args(options), capsys=capsys)
    if code != 0:
        return code, None, err
    with open(report) as f:
        return code, json.load(f), err


@pytest.fixture(scope='module')
def options(tiny_trained, synthetic_root):
    return data_options(tiny_trained, synthetic_root)


@pytest.fixture(scope='module')
def planted(tiny_trained, options, tmp_path_factory):
    """The tiny trained model fused with outliers planted by
    ``tools/convert.py --plant-outliers 200`` (4 of the producers feeding
    the PSP head, drawn with seed 0): ``dict(config, checkpoint, meta)``."""
    from repvgg_seg.deploy.convert import read_checkpoint_meta
    folder = tmp_path_factory.mktemp('planted')
    checkpoint = str(folder / 'planted.pth')
    code, err = run_tool('convert', tiny_trained['config'],
                         tiny_trained['checkpoint'], checkpoint,
                         '--plant-outliers', '200', *option_args(options))
    assert code == 0, err
    return dict(config=str(folder / 'planted_deploy.py'),
                checkpoint=checkpoint,
                meta=read_checkpoint_meta(checkpoint))


def test_planted_checkpoint_keeps_the_fp32_function(planted):
    """tools/convert.py --plant-outliers 200 records the planting in the meta
    (k, where, the producers feeding the PSP head) and keeps the fused logits
    within 1e-5 of the original."""
    meta = planted['meta']
    # checked by convert against the unfused model on a random input
    assert meta['max_rel_diff'] <= 1e-5
    plant = meta['planted_outliers']
    assert (plant['k'], plant['where']) == (200.0, 'decode_head')
    assert [p['producer'] for p in plant['pairs']] == [
        'backbone.stage4.0.rbr_reparam', 'decode_head.psp_modules.1.1.conv',
        'decode_head.psp_modules.2.1.conv', 'decode_head.bottleneck.conv']
    assert all(len(p['channels']) == 4 for p in plant['pairs'])


# --------------------------------------------------------------------------
# names across torch, ONNX and OpenVINO

#: the layers of the exported tiny A0 (no auxiliary head: not exported), in
#: the model's own module names
A0_LAYERS = (['backbone.stage0'] + [f'backbone.stage1.{i}' for i in range(2)]
             + [f'backbone.stage2.{i}' for i in range(4)]
             + [f'backbone.stage3.{i}' for i in range(14)]
             + ['backbone.stage4.0']
             + [f'decode_head.psp_modules.{i}.1' for i in range(4)]
             + ['decode_head.bottleneck', 'decode_head.conv_seg'])


def test_conv_names_match_every_exported_conv(tiny_trained, options):
    """ConvNames maps every exported OpenVINO conv to its module (the weights
    match), names layers and selects them by glob."""
    import numpy as np

    from repvgg_seg.apis import LogitsModule, load_model
    from repvgg_seg.models.convert import fuse_for_deploy
    from repvgg_seg.quantization.names import ConvNames
    from repvgg_seg.quantization.ptq import exported_openvino
    model = load_model(tiny_trained['config'], tiny_trained['checkpoint'],
                       cfg_options=options)
    fuse_for_deploy(model)
    module = LogitsModule(model).eval()
    ov_model, _ = exported_openvino(module, (1, 3, 64, 128))
    names = ConvNames(module, ov_model)
    assert sorted(names.exported_layers) == sorted(A0_LAYERS)
    # the map is right: each node's weights are its module's
    modules = dict(model.named_modules())
    nodes = {op.get_friendly_name(): op for op in ov_model.get_ops()}
    for node, module_name in names.modules.items():
        weight = nodes[node].input_value(1).get_node().get_data()
        expected = modules[module_name].weight.detach().numpy()
        assert np.array_equal(weight.reshape(expected.shape), expected)
    assert names.modules[
        '/model/bottleneck/conv/Conv/WithoutBiases'] == \
        'decode_head.bottleneck.conv'
    assert names.layer('/model/backbone/stage3/stage3.13/rbr_reparam/Conv/'
                       'WithoutBiases') == 'backbone.stage3.13'
    assert names.layer('Add_7') == 'Add_7'
    selected = names.select(['backbone.stage1.*', 'decode_head.conv_seg'])
    assert [sorted(names.layer(n) for n in nodes)
            for nodes in selected.values()] == [
                ['backbone.stage1.0', 'backbone.stage1.1'],
                ['decode_head.conv_seg']]
    # the conv module's own name works too
    assert len(names.select(['backbone.stage0.rbr_reparam'])[
        'backbone.stage0.rbr_reparam']) == 1


def test_conv_names_tie_broken_by_scope():
    """Two modules with the same weights: the OpenVINO node's scope picks the
    right one."""
    from repvgg_seg.quantization.names import ConvNames
    assert ConvNames._best(
        '/model/backbone/stage2/stage2.1/rbr_reparam/Conv',
        ['backbone.stage2.0.rbr_reparam',
         'backbone.stage2.1.rbr_reparam']) == 'backbone.stage2.1.rbr_reparam'


# --------------------------------------------------------------------------
# the tool: equalization, metric, --keep-fp32, --max-drop, --sensitivity


def test_equalization_is_on_by_default(tmp_path):
    """The tool equalizes unless told --no-equalize, as the library does
    unless told ``equalize=False``."""
    from repvgg_seg.quantization.options import QuantizeOptions
    tool = load_tool('quantize')
    args = [DEMO_CONFIG, 'none', str(tmp_path / 'm.xml')]
    assert QuantizeOptions().equalize is True
    assert tool.options_from_args(tool.parse_args(args)) == QuantizeOptions()
    assert tool.options_from_args(tool.parse_args(
        args + ['--no-equalize'])) == QuantizeOptions(equalize=False)


def test_equalized_quantization_is_exact_in_fp32(tiny_trained, options,
                                                 tmp_path, capsys):
    """The tool's default run: every fused conv but the classifiers
    equalized, exactly (the fp32 model's held-out mIoU is the unequalized
    torch model's), and every conv in INT8."""
    code, report, err = quantize(tiny_trained, tmp_path / 'm.xml',
                                 options=options, capsys=capsys)
    assert code == 0, err
    assert 'cross-layer equalization' in err
    equalized = report['equalization']
    # every fused conv of the model produces for a pair but the two
    # classifiers; the FCN head's input is shared with stage 4
    assert equalized['producers'] == 28 and equalized['skipped'] == 2
    assert equalized['power_of_two'] is False
    assert equalized['fp32_max_rel_diff'] <= 1e-5
    # the val split has labels: the metric is mmseg's mIoU, fp32 = INT8 up
    # to quantization (the tiny model's mIoU is ~10)
    metric = report['metric']
    assert metric['name'] == 'miou'
    assert 0 < metric['fp32'] < 100
    assert metric['drop'] == pytest.approx(metric['fp32'] - metric['int8'])
    assert report['fp32_layers'] == []
    assert report['int8_convs'] == report['convs'] == len(A0_LAYERS)
    # the same images, the model before equalization: the same fp32 mIoU
    assert metric['fp32'] == pytest.approx(
        unequalized_miou(tiny_trained, options), abs=1e-3)


def unequalized_miou(trained, options):
    """The held-out mIoU of the fused, unequalized torch model on the
    images the tool scores at :data:`SHAPE` with 4 calibration images."""
    from repvgg_seg.apis import LogitsModule, load_model
    from repvgg_seg.config import as_config
    from repvgg_seg.evaluation.metrics import heldout_metric
    from repvgg_seg.models.convert import fuse_for_deploy
    from repvgg_seg.quantization.images import calibration_and_heldout
    from repvgg_seg.quantization.options import QuantizeOptions
    cfg = as_config(trained['config'], options)
    model = load_model(cfg, trained['checkpoint'])
    fuse_for_deploy(model)
    module = LogitsModule(model).eval()
    images = calibration_and_heldout(cfg, model, QuantizeOptions(
        shape=[int(v) for v in SHAPE[1:]], calib_images=4))
    metric = heldout_metric('auto', cfg, model, images.heldout,
                            images.heldout_from, module)
    return metric(module)[0]


def test_equalization_falls_back_to_bit_exact_scales(tiny_trained, options,
                                                      monkeypatch):
    """Where exact scales' rounding fails the fp32 check (made strict here:
    1e-12), the tool equalizes with power-of-two scales, which keep the
    fp32 function bit for bit."""
    import functools

    from repvgg_seg.apis import load_model
    from repvgg_seg.evaluation.agreement import preprocess, synthetic_image
    from repvgg_seg.models.convert import fuse_for_deploy
    from repvgg_seg.quantization import quantize
    model = load_model(tiny_trained['config'], tiny_trained['checkpoint'],
                       cfg_options=options)
    fuse_for_deploy(model)
    inputs = [preprocess(model, synthetic_image(64, 128, seed=s))
              for s in range(2)]
    strict = functools.partial(quantize.check_function_preserved,
                               tolerance=1e-12)
    monkeypatch.setattr(quantize, 'check_function_preserved', strict)
    report = quantize.equalized(model, inputs)
    assert report['power_of_two'] is True
    assert report['fp32_max_rel_diff'] == 0.0
    assert report['producers'] == 28


def test_heldout_miou_is_mmseg_s(tiny_trained, options):
    """The held-out mIoU is what mmseg's IoUMetric gives for the same
    predictions (here the torch model's own)."""
    from mmseg.evaluation import IoUMetric

    from repvgg_seg.apis import LogitsModule, load_model
    from repvgg_seg.config import as_config
    from repvgg_seg.evaluation.metrics import HeldoutMIoU
    cfg = as_config(tiny_trained['config'], options)
    model = load_model(cfg, tiny_trained['checkpoint']).eval()
    metric = HeldoutMIoU(cfg, model, 'val', [0, 1])
    module = LogitsModule(model).eval()
    value, per_image = metric(module)
    iou = IoUMetric(iou_metrics=['mIoU'])
    iou.dataset_meta = metric.dataset.metainfo
    for index in (0, 1):
        sample = metric.dataset[index]
        with torch.no_grad():
            out = model.test_step(dict(inputs=[sample['inputs']],
                                       data_samples=[sample['data_samples']]))
        iou.process({}, [o.to_dict() for o in out])
    expected = iou.compute_metrics(iou.results)['mIoU']
    assert value == pytest.approx(expected, abs=0.01)  # mmseg rounds to 0.01
    assert len(per_image) == 2 and all(0 <= v <= 100 for v in per_image)


def test_keep_fp32_leaves_exactly_the_named_layers(tiny_trained, options,
                                                   tmp_path, capsys):
    """--keep-fp32 leaves exactly the named layers in fp32 (OpenVINO's
    profile), and the pyramid's ReduceMean cells get no quantizer."""
    code, report, err = quantize(
        tiny_trained, tmp_path / 'm.xml', '--keep-fp32', 'backbone.stage1.*',
        'decode_head.conv_seg', options=options, capsys=capsys)
    assert code == 0, err
    expected = ['backbone.stage1.0', 'backbone.stage1.1',
                'decode_head.conv_seg']
    assert report['keep_fp32'] == {'backbone.stage1.*': expected[:2],
                                   'decode_head.conv_seg': expected[2:]}
    # OpenVINO's profile of the written IR: exactly those run in fp32
    assert sorted(report['fp32_layers']) == expected
    assert report['int8_convs'] == report['convs'] - 3
    assert 'convs run in fp32: backbone.stage1.0, backbone.stage1.1, ' \
        'decode_head.conv_seg' in err
    # the pyramid's bins of 2x4 features at 64x128 export as Slice +
    # ReduceMean cells: left in float, no quantizer of their own
    ops = ov.Core().read_model(str(tmp_path / 'm.xml')).get_ops()
    means = [op for op in ops if op.get_type_name() == 'ReduceMean']
    assert len(means) > 40
    assert not [op for op in means if op.input_value(0).get_node()
                .get_type_name() == 'FakeQuantize']


#: the layers of the sensitivity table: one behind each kind of planted
#: producer (stage 4 -> pyramid, pyramid -> bottleneck, bottleneck ->
#: classifier), and the classifier
SENSITIVITY = ('decode_head.psp_modules.3.1', 'decode_head.bottleneck',
               'decode_head.conv_seg', 'backbone.stage4.0')


@pytest.fixture(scope='module')
def planted_runs(planted, options, tmp_path_factory):
    """Plain PTQ of the planted model with its sensitivity table, and
    accuracy-controlled PTQ with --max-drop 1 (agreement, no equalization),
    both with stages 0-3 kept in fp32 (the outliers are planted behind
    them; fewer layers for NNCF to rank): ``{name: report}``."""
    runs = {}
    for name, extra in (('plain', ('--sensitivity', *SENSITIVITY)),
                        ('controlled', ('--max-drop', '1'))):
        out = tmp_path_factory.mktemp(name)
        code, report, err = quantize(
            planted, out / 'm.xml', '--no-equalize', '--metric', 'agreement',
            '--keep-fp32', KEPT, *extra, options=options)
        assert code == 0, err
        runs[name] = report
    return runs


def test_max_drop_restores_the_planted_model(planted, planted_runs):
    """Plain PTQ of the planted model loses ~40 points of agreement
    (measured 58.6% without the kept stages); accuracy control meets
    --max-drop 1 by keeping the layers after the planted outliers in fp32
    (measured 99.1%: the bottleneck and the classifier)."""
    plain, controlled = planted_runs['plain'], planted_runs['controlled']
    kept = [name for name in A0_LAYERS
            if name.startswith(('backbone.stage0', 'backbone.stage1',
                                'backbone.stage2', 'backbone.stage3'))]
    assert len(kept) == 21
    assert plain['metric']['drop'] > 20
    assert sorted(plain['fp32_layers']) == sorted(kept)
    assert controlled['metric']['drop'] <= 1
    assert controlled['metric']['fp32'] == pytest.approx(100, abs=0.01)
    assert controlled['max_drop'] == 1
    reverted = set(controlled['fp32_layers']) - set(kept)
    assert set(kept) <= set(controlled['fp32_layers'])
    assert 1 <= len(reverted) <= 4
    assert reverted <= set(A0_LAYERS)
    assert controlled['int8_convs'] == \
        controlled['convs'] - len(controlled['fp32_layers'])
    # the agreement the tool reports is the metric it controlled
    assert controlled['argmax_agreement_pct'] == pytest.approx(
        controlled['metric']['int8'])
    # both ran with --no-equalize
    assert plain['equalization'] is None
    assert controlled['equalization'] is None


def test_max_drop_it_cannot_meet_writes_nothing(planted, options, tmp_path,
                                                capsys):
    """A --max-drop accuracy control cannot meet within --max-fp32-layers
    is one error line naming the drop, and nothing is written."""
    # the last pyramid conv and the bottleneck (both behind planted
    # outliers) in INT8, and one of them may be reverted: exact agreement
    # is out of reach (two layers for NNCF to rank: fast)
    code, _, err = quantize(planted, tmp_path / 'm.xml', '--no-equalize',
                            '--metric', 'agreement', '--max-drop', '0',
                            '--max-fp32-layers', '1', '--keep-fp32',
                            'backbone.*', 'decode_head.conv_seg',
                            'decode_head.psp_modules.[0-2].*',
                            options=options, capsys=capsys)
    assert code == 2
    assert 'cross-layer equalization' not in err  # --no-equalize
    line = error_line(err)
    assert re.search(r'could not keep the agreement drop within --max-drop '
                     r'0: 100\.00 \(fp32\) -> \d+\.\d\d \(INT8\) with 2[67] '
                     r'layers in fp32; nothing was written', line), line
    assert os.listdir(tmp_path) == []


def test_sensitivity_table(planted_runs):
    """The --sensitivity table: the layers asked for, sorted by gain,
    consistent with the all-INT8 model written, a layer behind the planted
    outliers on top."""
    report = planted_runs['plain']
    table = report['sensitivity']
    assert table['metric'] == 'agreement'
    assert table['fp32'] == pytest.approx(100, abs=0.01)
    # the all-INT8 model is the one written
    assert table['all_int8'] == pytest.approx(report['metric']['int8'],
                                              abs=1e-3)
    rows = table['layers']
    # the layers asked for, each once
    assert sorted(r['layer'] for r in rows) == sorted(SENSITIVITY)
    assert [r['gain'] for r in rows] == sorted((r['gain'] for r in rows),
                                               reverse=True)
    for row in rows:
        assert row['gain'] == pytest.approx(
            row['metric_with_layer_fp32'] - table['all_int8'], abs=2e-3)
    # the layers right after the planted outliers gain most (the outliers
    # sit on their inputs): the top one is a consumer of a planted producer
    assert rows[0]['gain'] > 10
    assert rows[0]['layer'] in ('decode_head.bottleneck',
                                'decode_head.conv_seg') or \
        rows[0]['layer'].startswith('decode_head.psp_modules.')


# --------------------------------------------------------------------------
# bad input: one line, nothing written


@pytest.mark.parametrize('extra, message', [
    (('--max-drop', '-1'), '--max-drop is a drop of the metric in points '
     '(0-100), got -1'),
    (('--max-fp32-layers', '2'), '--max-fp32-layers caps the layers '
     '--max-drop keeps in fp32: give --max-drop, and a count >= 1, got 2'),
    (('--max-drop', '1', '--max-fp32-layers', '0'), 'a count >= 1, got 0'),
    (('--keep-fp32', 'backbone.stage9.*'), "--keep-fp32 'backbone.stage9.*' "
     'matches no layer of the exported model; near names: '),
    (('--sensitivity', 'neck.*'), "--sensitivity 'neck.*' matches no layer "
     'of the exported model'),
    (('--metric', 'miou', '--generated', '--heldout-images', '1'),
     '--metric miou needs labelled held-out images; these are generated '
     'images without labels: use --metric agreement'),
])
def test_bad_accuracy_options(extra, message, tiny_trained, options,
                              tmp_path, capsys):
    """Each bad accuracy option is one error line naming it, and nothing is
    written."""
    code, _, err = quantize(tiny_trained, tmp_path / 'm.xml', *extra,
                            options=options, capsys=capsys)
    assert code == 2
    assert message in error_line(err)
    assert os.listdir(tmp_path) == []


def test_keep_fp32_error_lists_near_names(tiny_trained, options, tmp_path,
                                          capsys):
    """A --keep-fp32 glob that matches no layer names the nearest layers."""
    code, _, err = quantize(tiny_trained, tmp_path / 'm.xml', '--keep-fp32',
                            'backbone.stage4.3', options=options,
                            capsys=capsys)
    assert code == 2
    line = error_line(err)
    assert 'near names: backbone.stage4.0' in line
    assert 'of 28 layers' in line
    assert os.listdir(tmp_path) == []


def test_max_drop_without_a_heldout_split(tiny_trained, options, tmp_path,
                                          capsys):
    """--max-drop without a val split to hold images out is one error line."""
    code, _, err = quantize(tiny_trained, tmp_path / 'm.xml', '--max-drop',
                            '0.5', options=dict(options,
                                                val_dataloader=None),
                            capsys=capsys)
    assert code == 2
    assert 'has no val_dataloader to take images from' in error_line(err)
    assert os.listdir(tmp_path) == []


def test_miou_on_a_split_without_labels(tiny_trained, synthetic_root,
                                        tmp_path, capsys):
    """--metric miou on held-out images without label files is one error line
    counting them."""
    root = tmp_path / 'data'
    shutil.copytree(synthetic_root, root)
    shutil.rmtree(root / 'gtFine' / 'val')
    out = tmp_path / 'out'
    out.mkdir()
    code, _, err = quantize(tiny_trained, out / 'm.xml', '--metric', 'miou',
                            options=data_options(tiny_trained, str(root)),
                            capsys=capsys)
    assert code == 2
    line = error_line(err)
    assert re.search(r'--metric miou needs labelled held-out images: 2 of '
                     r'the 2 val images have no label file', line), line
    assert os.listdir(out) == []
