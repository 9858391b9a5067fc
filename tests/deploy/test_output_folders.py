"""Where tools/convert.py writes: missing folders are made, an existing
output needs --force, and a file in the way of a folder is one error
line."""
import os
import os.path as osp

from tests.helpers import error_report, run_tool


def test_convert_creates_the_output_folders(tiny_deploy, tiny_config,
                                            tiny_checkpoint, tmp_path,
                                            capsys):
    folder = osp.dirname(tiny_deploy['checkpoint'])
    assert sorted(os.listdir(folder)) == ['fast.pth', 'fast_deploy.py']
    # an existing output still needs --force
    code, err = run_tool('convert', tiny_config, tiny_checkpoint,
                         tiny_deploy['checkpoint'], capsys=capsys)
    assert code == 2
    assert error_report(err).startswith(
        f'error: {tiny_deploy["checkpoint"]} already exists; pass --force')
    # a folder that cannot be made: a file is in the way
    blocker = tmp_path / 'deploy'
    blocker.write_text('a file')
    out = blocker / 'tiny' / 'fast.pth'
    code, err = run_tool('convert', tiny_config, tiny_checkpoint, str(out),
                         capsys=capsys)
    assert code == 2
    assert error_report(err).startswith(
        f'error: cannot write {out}: {blocker} is a file, not a folder\n')
    assert blocker.read_text() == 'a file'
