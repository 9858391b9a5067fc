"""The tools' checkpoint argument: 'none' (any case) means random weights
for the tools that only run a model (export, quantize), and is refused by
argparse where a tool needs trained weights (convert); each tool's help
says which."""
import pytest

from tests.helpers import error_report, load_tool, run_tool


def test_export_takes_none_and_makes_the_folder(tiny_config, tmp_path,
                                                capsys):
    out = tmp_path / 'onnx' / 'random.onnx'
    code, err = run_tool('export_onnx', tiny_config, 'none', str(out),
                         '--shape', '64', '64', capsys=capsys)
    assert code == 0, err
    assert out.stat().st_size > 10000


def test_quantize_takes_none_as_export_does(tiny_config, tmp_path, capsys):
    """'none' is random weights, not a file name: the run gets past the
    weights to the next check (the input size, checked on the model)."""
    out = tmp_path / 'int8' / 'model.xml'
    code, err = run_tool('quantize', tiny_config, 'NONE', str(out),
                         '--shape', '0', '64', capsys=capsys)
    assert code == 2
    report = error_report(err)
    assert 'checkpoint file not found' not in report
    assert report.startswith('error: input shape 0x64 is too small')


def test_convert_refuses_none_in_its_argument_check(tiny_config, tmp_path,
                                                    capsys):
    with pytest.raises(SystemExit) as exit_:
        run_tool('convert', tiny_config, 'none', str(tmp_path / 'x.pth'))
    assert exit_.value.code == 2
    assert "argument checkpoint: 'none' (random weights) does not apply " \
        'here: this tool needs trained weights' in capsys.readouterr().err
    assert not (tmp_path / 'x.pth').exists()


@pytest.mark.parametrize('tool', ['convert', 'export_onnx', 'quantize'])
def test_help_says_what_none_means(tool, capsys):
    with pytest.raises(SystemExit):
        load_tool(tool).main(['--help'])
    text = ' '.join(capsys.readouterr().out.split())
    expected = ("not 'none': there are no random weights to convert"
                if tool == 'convert' else "or 'none' for random weights")
    assert expected in text
