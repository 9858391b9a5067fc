"""tools/export_onnx.py: the fused segmentor's ONNX export (and OpenVINO
IR), checked against torch before anything is written."""
import os

import pytest
import torch

from repvgg_seg.apis import load_model
from repvgg_seg.cli import run_cli

from tests.deploy.common import SMALL, logits
from tests.helpers import load_tool, relative_error


def test_export_onnx_matches_torch(converted, tmp_path, capsys):
    """A --dynamic ONNX export matches torch at a size it was not checked
    at; an existing output is refused and kept."""
    ort = pytest.importorskip('onnxruntime')
    out, deploy_cfg = converted
    onnx_path = tmp_path / 'demo.onnx'
    export = load_tool('export_onnx').main
    assert run_cli(export, [deploy_cfg, out, str(onnx_path), '--dynamic']
                   + SMALL) == 0
    printed = capsys.readouterr().out
    assert 'max relative logit error' in printed
    # an independent check, at a size the export did not see
    model = load_model(deploy_cfg, out)
    x = torch.randn(1, 3, 80, 56)
    session = ort.InferenceSession(str(onnx_path),
                                   providers=['CPUExecutionProvider'])
    onnx_out = torch.from_numpy(session.run(None, {'input': x.numpy()})[0])
    torch_out = logits(model, x)
    assert onnx_out.shape == torch_out.shape == (1, 19, 80, 56)
    assert relative_error(torch_out, onnx_out) < 1e-4
    # refuses to overwrite
    before = onnx_path.read_bytes()
    assert run_cli(export, [deploy_cfg, out, str(onnx_path)] + SMALL) == 2
    assert str(onnx_path) in capsys.readouterr().err
    assert onnx_path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ['demo.onnx']


def test_export_openvino_ir_matches_torch(converted, tmp_path, capsys):
    """--openvino also writes an fp32 IR, checked at both sizes, which
    matches torch at a third."""
    ov = pytest.importorskip('openvino')
    out, deploy_cfg = converted
    onnx_path = tmp_path / 'demo.onnx'
    assert run_cli(load_tool('export_onnx').main,
                   [deploy_cfg, out, str(onnx_path), '--openvino',
                    '--dynamic'] + SMALL) == 0
    printed = capsys.readouterr().out
    assert printed.count('openvino vs torch at') == 2  # both check sizes
    assert sorted(os.listdir(tmp_path)) == ['demo.bin', 'demo.onnx',
                                            'demo.xml']
    # fp32 weights (ov.save_model compresses to fp16 by default)
    ir = (tmp_path / 'demo.xml').read_text()
    assert 'element_type="f16"' not in ir
    # an independent check with the IR as written, at a size the export did
    # not see, at fp32 whatever the CPU's default inference precision
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(tmp_path / 'demo.xml')),
                                  'CPU', {'INFERENCE_PRECISION_HINT': 'f32'})
    x = torch.randn(1, 3, 80, 56)
    ov_out = torch.from_numpy(compiled({0: x.numpy()})[0])
    torch_out = logits(load_model(deploy_cfg, out), x)
    assert ov_out.shape == torch_out.shape == (1, 19, 80, 56)
    assert relative_error(torch_out, ov_out) < 1e-4


def test_export_refuses_an_openvino_ir_that_differs(converted, tmp_path,
                                                    monkeypatch, capsys):
    """An IR 1% off torch is one error line, and neither file is written."""
    pytest.importorskip('openvino')
    import repvgg_seg.deploy.export as export
    real_infer = export.openvino_infer

    def off_by_one_percent(path, *args, **kwargs):
        run = real_infer(path, *args, **kwargs)
        return lambda x: run(x) * 1.01

    monkeypatch.setattr(export, 'openvino_infer', off_by_one_percent)
    out, deploy_cfg = converted
    code = run_cli(load_tool('export_onnx').main,
                   [deploy_cfg, out, str(tmp_path / 'demo.onnx'),
                    '--openvino'] + SMALL)
    assert code == 2
    assert 'the OpenVINO IR differs from torch: max relative logit error ' \
        in capsys.readouterr().err
    assert os.listdir(tmp_path) == []  # neither the ONNX nor the IR
