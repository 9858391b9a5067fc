"""The Winograd engine (:mod:`repvgg_seg.engines.winograd`): the same
function as the direct convs (groups, dilations, dilated runs, a fused
segmentor), and its plan: interleaved timings with a margin, one recording
forward, the plan as data, the plan's cache file.

Timings are faked (``tuning._time_once``) so that the rule, not the machine,
decides; the convs still run for real (warm-up and the check)."""
import copy
import json

import pytest
import torch
import torch.nn as nn

from repvgg_seg.apis import LogitsModule, build_model
from repvgg_seg.engines import winograd
from repvgg_seg.engines.winograd import tuning
from repvgg_seg.errors import InputError
from repvgg_seg.models import RepVGG
from repvgg_seg.models.convert import fuse_for_deploy

from tests.conftest import DEMO_CONFIG as DEMO
from tests.helpers import TINY_ARCHS, randomize_bn, relative_error

# the 'fast' dilation's runs, with grouped convs of 2 and 4 groups
ARCH = dict(TINY_ARCHS['dilated_runs'],
            group_layer_map={2: 2, 4: 2, 6: 4, 8: 2})
SHAPE = (1, 3, 45, 53)

needs_nnpack = pytest.mark.skipif(not winograd.nnpack_available(),
                                  reason='no NNPACK in this PyTorch build')


@pytest.fixture(autouse=True)
def one_thread_fresh_cache(monkeypatch):
    """One intra-op thread (2 shared cores), and an empty plan cache so that
    every test measures."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setattr(tuning, '_PLAN_CACHE', {})
    monkeypatch.delenv(winograd.CACHE_ENV, raising=False)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope='module')
def fused():
    torch.manual_seed(0)
    return RepVGG(ARCH, dilation='fast', deploy=True).eval()


def fake_costs(monkeypatch, costs):
    """Time every conv (and every dilated run, as the sum of its convs) as
    ``costs[method]`` seconds."""
    def time_once(fn, x):
        convs = ([winograd.plain_conv(b) for b in fn.blocks]
                 if isinstance(fn, winograd.DilatedRun) else [fn])
        return sum(costs[c.method] for c in convs)

    monkeypatch.setattr(tuning, '_time_once', time_once)


def test_pick_keeps_the_baseline_within_the_margin():
    assert tuning.pick({'direct': 1.0, 'nnpack': 0.98}, 'direct') == 'direct'
    assert tuning.pick({'direct': 1.0, 'nnpack': 0.80}, 'direct') == 'nnpack'
    assert tuning.pick({'direct': 1.0, 'nnpack': 1.20}, 'direct') == 'direct'
    assert tuning.pick({'direct': 1.0, 'nnpack': 0.96}, 'direct',
                       margin=0.0) == 'nnpack'
    # the fastest alternative is the one compared with the baseline
    assert tuning.pick({'plan': 1.0, 'nnpack': 0.9, 'nnpack_mosaic': 0.7},
                       'plan') == 'nnpack_mosaic'


def test_rounds_interleave_the_candidates_and_medians_decide(monkeypatch):
    """Each round times every candidate once, in a rotated order; one lucky
    sample does not win (a single timing picked NNPACK here)."""
    order, state = [], {}
    lucky = iter([0.5, 1.0, 1.0, 1.0, 1.0])

    def time_once(fn, x):
        order.append(state['method'])
        return next(lucky) if state['method'] == 'nnpack' else 1.0

    monkeypatch.setattr(tuning, '_time_once', time_once)
    setups = {m: (lambda m=m: state.update(method=m))
              for m in ('direct', 'nnpack', 'nnpack_mosaic')}
    calls = []
    medians = tuning.interleaved_medians(calls.append, torch.zeros(1),
                                         setups, rounds=5)
    assert len(calls) == 3  # the untimed warm-up, once per candidate
    rounds = [order[i:i + 3] for i in range(0, 15, 3)]
    assert all(sorted(r) == sorted(setups) for r in rounds)
    assert len({tuple(r) for r in rounds[:3]}) == 3  # the order rotates
    assert medians == {'direct': 1.0, 'nnpack': 1.0, 'nnpack_mosaic': 1.0}
    assert tuning.pick(medians, 'direct') == 'direct'


@needs_nnpack
@pytest.mark.parametrize('faster, expect_nnpack', [(0.02, False),
                                                   (0.20, True)])
def test_direct_kept_unless_nnpack_wins_clearly(fused, monkeypatch, faster,
                                                expect_nnpack):
    """NNPACK 2% faster in median: every conv and every run stays direct;
    20% faster: NNPACK everywhere. The result is the plan as data."""
    fake_costs(monkeypatch, {'direct': 1.0, 'direct_s2b': 1.0,
                             'nnpack': 1.0 - faster,
                             'nnpack_mosaic': 1.0 - faster})
    model = copy.deepcopy(fused)
    x = torch.randn(*SHAPE)
    with torch.no_grad():
        reference = model(x)
    report = winograd.convert_to_winograd(model, SHAPE, tune=True, reps=3)
    plan = report['plan']
    assert report['runs'] == 1 and len(plan) == report['convs'] > 5
    # the plan is {conv name: method}, also on the model
    assert model.winograd_plan == plan
    for name, method in plan.items():
        conv = model.get_submodule(name)
        assert isinstance(conv, winograd.WinogradConv2d)
        assert conv.method == method
    if expect_nnpack:
        assert all(m.startswith('nnpack') for m in plan.values()), plan
        assert report['nnpack'] == report['convs']
    else:
        assert set(plan.values()) == {'direct'}, plan
        assert report['nnpack'] == 0
    # the cache holds the decisions: a run's choice is its per-conv plan
    runs = {k: v for k, v in tuning._PLAN_CACHE.items() if ':run-' in k}
    assert len(runs) == 1
    assert set(runs.values()) == {'plan'}
    with torch.no_grad():
        assert relative_error(list(reference), list(model(x))) < 1e-4


@needs_nnpack
@pytest.mark.parametrize('check, forwards', [(True, 2), (False, 1)])
def test_one_forward_records_the_shapes(fused, monkeypatch, check,
                                        forwards):
    """The original model runs once (reference output and conv input shapes
    together); the check adds one forward of the converted model."""
    fake_costs(monkeypatch, {'direct': 1.0, 'direct_s2b': 1.0,
                             'nnpack': 0.5, 'nnpack_mosaic': 0.5})
    model = copy.deepcopy(fused)
    calls = []
    model.register_forward_pre_hook(lambda m, args: calls.append(
        tuple(args[0].shape)))
    candidates = sum(winograd.is_candidate(m) for m in model.modules())
    report = winograd.convert_to_winograd(model, SHAPE, tune=True, reps=1,
                                          check=check)
    assert calls == [SHAPE] * forwards
    assert report['convs'] == candidates  # every candidate's shape recorded
    assert (report['max_rel_error'] is not None) == check


@needs_nnpack
def test_runner_records_the_plan_for_the_benchmark_row(fused):
    run = winograd.winograd_runner(fused, SHAPE, tune=False)
    info = run.info
    assert info['winograd_convs'] == len(info['winograd_plan']) > 5
    assert info['winograd_nnpack_convs'] == info['winograd_convs']
    assert all(m.startswith('nnpack') for m in info['winograd_plan'].values())
    x = torch.randn(*SHAPE)
    with torch.no_grad():
        assert relative_error(list(fused(x)), list(run(x))) < 1e-4
    # the benchmark's model is converted as a copy
    assert not any(isinstance(m, winograd.WinogradConv2d)
                   for m in fused.modules())


def test_not_a_candidate_is_an_input_error():
    with pytest.raises(InputError, match='not a stride-1 3x3 fp32 conv'):
        winograd.WinogradConv2d(nn.Conv2d(8, 8, 3, stride=2, padding=1))
    with pytest.raises(InputError, match='not a stride-1 3x3 fp32 conv'):
        winograd.WinogradConv2d(nn.Conv2d(8, 8, 3, padding=1, dilation=2))


def test_the_names_other_modules_import_are_there():
    for name in ('CACHE_ENV', 'RUN_CHOICES', 'DilatedRun', 'WinogradConv2d',
                 'convert_to_winograd', 'winograd_runner', 'nnpack_available',
                 'require_nnpack', 'plain_conv', 'is_candidate',
                 'space_to_batch', 'batch_to_space', 'space_to_mosaic',
                 'mosaic_to_space'):
        assert hasattr(winograd, name), name
    assert winograd.CACHE_ENV == 'REPVGG_SEG_WINOGRAD_CACHE'


@needs_nnpack
@pytest.mark.parametrize('dilation', ['fast', 'last_two_stages'])
def test_winograd_matches_direct_conv(dilation):
    model = RepVGG(ARCH, dilation=dilation, deploy=True).eval()
    x = torch.randn(1, 3, 61, 67)  # 8x9 maps: not multiples of 2 or 4
    with torch.no_grad():
        reference = model(x)
    for method in winograd.WinogradConv2d.DILATED_METHODS:
        converted = copy.deepcopy(model)
        report = winograd.convert_to_winograd(converted, x.shape, tune=False)
        assert report['max_rel_error'] < 1e-4
        assert report['runs'] == 1  # the dilated stage-3 blocks
        assert any(isinstance(m, winograd.DilatedRun)
                   for m in converted.modules())
        convs = [m for m in converted.modules()
                 if isinstance(m, winograd.WinogradConv2d)]
        assert {c.groups for c in convs} >= {1, 2, 4}
        for conv in convs:
            if conv.dilated:
                conv.method = method
        with torch.no_grad():
            out = converted(x)
        assert relative_error(list(reference), list(out)) < 1e-4, method


@needs_nnpack
def test_winograd_plan_cache_and_dilated_run_tuning(tmp_path, monkeypatch):
    """Tuning times every conv's methods and each dilated run's choices,
    keeps the winners in the cache file, and a second conversion with that
    file times nothing and picks the same plan."""
    model = RepVGG(ARCH, dilation='last_two_stages', deploy=True).eval()
    x = torch.randn(1, 3, 45, 53)
    with torch.no_grad():
        reference = model(x)
    cache = tmp_path / 'plan.json'
    monkeypatch.setattr(winograd.tuning, '_PLAN_CACHE', {})
    timed = []
    real_time = winograd.tuning._time_once
    monkeypatch.setattr(winograd.tuning, '_time_once', lambda fn, inp: (
        timed.append(fn), real_time(fn, inp))[1])
    first = copy.deepcopy(model)
    report = winograd.convert_to_winograd(first, x.shape, tune=True, reps=1,
                                          cache_file=str(cache))
    assert report['runs'] >= 1 and report['max_rel_error'] < 1e-4
    # one timing per method of every conv, and per choice of every run
    runs = [m for m in first.modules() if isinstance(m, winograd.DilatedRun)]
    assert runs and any(fn is runs[0] for fn in timed)
    plan = json.loads(cache.read_text())
    run_keys = [k for k in plan if ':run-' in k]
    assert run_keys and all(plan[k] in ('plan', ) + winograd.RUN_CHOICES
                            for k in run_keys)
    # the second conversion reads the file: no timing, the same plan
    monkeypatch.setattr(winograd.tuning, '_PLAN_CACHE', {})
    timed.clear()
    second = copy.deepcopy(model)
    again = winograd.convert_to_winograd(second, x.shape, tune=True, reps=1,
                                         cache_file=str(cache))
    assert timed == []
    assert again['plan'] == report['plan']
    with torch.no_grad():
        assert relative_error(list(reference), list(second(x))) < 1e-4


@needs_nnpack
def test_winograd_engine_on_a_fused_segmentor():
    model = build_model(DEMO)
    randomize_bn(model, seed=3)
    x = torch.randn(1, 3, 48, 40)
    with torch.no_grad():
        reference = LogitsModule(model.eval())(x)
    module = LogitsModule(fuse_for_deploy(model))
    report = winograd.convert_to_winograd(module, x.shape, tune=True, reps=1)
    assert report['convs'] > 10 and report['max_rel_error'] < 1e-4
    assert set(report['plan'].values()) <= {'direct', 'direct_s2b', 'nnpack',
                                            'nnpack_mosaic'}
    with torch.no_grad():
        assert relative_error(reference, module(x)) < 1e-4
