"""``tools/serve.py``'s refusals before anything starts (one ``error:``
line, exit 2) and its Serve config file; serving itself is tested in
tests/serving."""
import pytest

from ..helpers import error_line, run_tool

pytest.importorskip('ray.serve')


@pytest.fixture
def model_files(tmp_path, tiny_config):
    weights = tmp_path / 'model.pth'
    weights.write_bytes(b'')
    return tiny_config, str(weights)


@pytest.mark.parametrize('extra, line', [
    (['--host', '0.0.0.0'], 'error: --host 0.0.0.0 serves other machines: '
     'give --token-file (a bearer token clients must send), or --insecure '
     'to serve them without one'),
    (['--host', '192.0.2.7', '--token-file', 'missing.txt'],
     'error: --token-file missing.txt: No such file or directory'),
    (['--max-batch-size', '0'], 'error: --max-batch-size must be >= 1, '
     'got 0'),
    (['--metrics-port', '8000'], 'error: --metrics-port 8000: a port of a '
     'local Ray (not --address), other than --port 8000; a cluster exports '
     'its metrics where `ray start --metrics-export-port` says'),
    (['--address', 'auto', '--metrics-port', '9100'], 'error: --metrics-port '
     '9100: a port of a local Ray (not --address), other than --port 8000; '
     'a cluster exports its metrics where `ray start --metrics-export-port` '
     'says'),
    (['--route-prefix', 'seg'], None),
])
def test_refusals_are_one_line(extra, line, model_files, capsys, tmp_path,
                               monkeypatch):
    monkeypatch.chdir(tmp_path)
    config, weights = model_files
    if line is None:  # not an option: argparse's own usage error
        with pytest.raises(SystemExit) as info:
            run_tool('serve', config, weights, *extra, capsys=capsys)
        assert info.value.code == 2
        return
    code, err = run_tool('serve', config, weights, *extra, capsys=capsys)
    assert code == 2
    assert error_line(err) == line


def test_an_empty_token_file_is_refused(model_files, capsys, tmp_path):
    config, weights = model_files
    token = tmp_path / 'token'
    token.write_text('\n')
    code, err = run_tool('serve', config, weights, '--token-file',
                         str(token), capsys=capsys)
    assert code == 2
    assert error_line(err) == f'error: --token-file {token} is empty'


def test_write_config_writes_a_serve_config(model_files, capsys, tmp_path):
    import yaml
    config, weights = model_files
    out = tmp_path / 'serve.yaml'
    code, _ = run_tool('serve', config, weights, '--replicas', '2',
                       '--engine', 'fused', '--port', '9001',
                       '--metrics-port', '9100',  # Ray's, not the app's
                       '--write-config', str(out), capsys=capsys)
    assert code == 0
    written = yaml.safe_load(out.read_text())
    assert written['http_options']['port'] == 9001
    assert written['http_options']['host'] == '127.0.0.1'
    args = written['applications'][0]['args']
    assert args == dict(config=config, weights=weights, engine='fused',
                        replicas=2)
