"""Parameters, FLOPs and Winograd MULs (:mod:`repvgg_seg.bench.complexity`,
tools/get_flops.py): the paper's Table 4 and its rounding, a segmentor
config's test-mode forward."""
import json

from repvgg_seg.bench.complexity import (PAPER_TABLE4, arch_complexity,
                                         paper_round, paper_truncate)
from repvgg_seg.cli import run_cli

from tests.conftest import DEMO_CONFIG as DEMO
from tests.helpers import load_tool


def test_paper_rounding_rules():
    # A0's Wino MULs: 0.747 B is 0.75 at two decimals, 0.7 at one
    assert paper_round(747_359_488) == 0.7
    assert paper_round(2_364_030_208) == 2.4  # truncation would give 2.3
    assert paper_truncate(8_309_384) == 8.30  # to nearest would give 8.31


def test_table4_every_listed_arch():
    for arch, (params_m, flops_b, wino_b) in PAPER_TABLE4.items():
        result = arch_complexity(arch)
        assert abs(result['params'] / 1e6 - params_m) < 0.015, arch
        assert paper_truncate(result['params']) == params_m, arch
        assert paper_round(result['flops']) == flops_b, arch
        assert paper_round(result['wino_muls']) == wino_b, arch
    assert paper_round(result['flops']) == 26.2  # B3, the last one
    assert paper_round(result['wino_muls']) == 12.9


def test_get_flops_tool_json(tmp_path, capsys):
    out = tmp_path / 'a0.json'
    assert run_cli(load_tool('get_flops').main,
                   ['A0', '--out-json', str(out)]) == 0
    assert '0.7 B' in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data['params'] == 8_309_384
    for key in ('params', 'flops', 'wino_muls'):
        assert isinstance(data[key], int)
    assert data['wino_muls'] < data['flops']


def test_get_flops_segmentor_config(tmp_path):
    out = tmp_path / 'seg.json'
    assert run_cli(load_tool('get_flops').main,
                   [DEMO, '--shape', '64', '64', '--out-json', str(out)]) == 0
    data = json.loads(out.read_text())
    # the auxiliary head is not part of the test-mode forward
    assert 0 < data['params'] < data['params_all']
    assert data['kind'] == 'segmentor' and data['shape'] == [64, 64]
    assert 0 < data['wino_muls'] < data['flops']
