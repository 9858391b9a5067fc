"""The Winograd engine's plan: interleaved timings with a margin, one
recording forward, the plan as data (:mod:`repvgg_seg.engines.winograd`).

Timings are faked (``tuning._time_once``) so that the rule, not the machine,
decides; the convs still run for real (warm-up and the check)."""
import copy

import pytest
import torch
import torch.nn as nn

from repvgg_seg.engines import winograd
from repvgg_seg.engines.winograd import tuning
from repvgg_seg.errors import InputError
from repvgg_seg.models import RepVGG

from tests.helpers import relative_error

ARCH = dict(num_blocks=(1, 2, 5, 1), width_factor=(0.25, 0.25, 0.25, 0.5),
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
