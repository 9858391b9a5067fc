"""Reliability: crash-safe training, safe loading on every path, and a clear
error (with nothing lost) for every kind of bad input."""
import json
import os
import os.path as osp
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from tests.conftest import REPO
from tests.helpers import captured_log, free_port, run_tool

# Two data-loader workers: a signal to the process group reaches them too
WORKERS = ['--cfg-options', 'train_dataloader.num_workers=2']


def _train_cmd(config, work_dir, *extra):
    return [sys.executable, osp.join(REPO, 'tools', 'train.py'), config,
            '--work-dir', str(work_dir), *extra]


def _logged_losses(work_dir) -> dict:
    """{iteration: loss} from every run's scalars.json in a work dir."""
    losses = {}
    for path in sorted(
            p for p in _walk(work_dir) if p.endswith('scalars.json')):
        with open(path) as f:
            for line in f:
                row = json.loads(line)
                if 'loss' in row:
                    losses[row['iter']] = row['loss']
    return losses


def _walk(folder):
    for root, _, files in os.walk(folder):
        for name in files:
            yield osp.join(root, name)


@pytest.fixture(scope='module')
def reference_losses(tmp_path_factory, tiny_config, tiny_epoch_config):
    """{loop kind: {iteration: loss}} of uninterrupted runs."""
    runs = {}
    for kind, config, iters in (('iter', tiny_config, 9),
                                ('epoch', tiny_epoch_config, 12)):
        work_dir = tmp_path_factory.mktemp(f'reference_{kind}')
        subprocess.run(_train_cmd(config, work_dir, *WORKERS), check=True,
                       capture_output=True, cwd=REPO, timeout=600)
        runs[kind] = _logged_losses(work_dir)
        assert sorted(runs[kind]) == list(range(1, iters + 1))
    return runs


def _run_until(command, work_dir, iteration, timeout=300, env=None):
    """Start training in a process group of its own (as torchrun and Slurm
    start their tasks) and return the process once ``iteration`` is
    logged."""
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if iteration in _logged_losses(work_dir):
            return proc
        if proc.poll() is not None:
            raise AssertionError(f'training ended early ({proc.returncode})')
        time.sleep(0.05)
    proc.kill()
    raise AssertionError('training did not reach the iteration in time')


def _checkpoint_iteration(path) -> int:
    """N of the iter_N.pth a last_checkpoint file names."""
    name = osp.basename(open(path).read().strip())
    assert name.startswith('iter_') and name.endswith('.pth'), name
    return int(name[len('iter_'):-len('.pth')])


@pytest.mark.parametrize('loop,how', [('iter', 'SIGINT'),
                                      ('epoch', 'SIGKILL'),
                                      ('epoch', 'SIGTERM')])
def test_killed_run_resumes_with_the_same_loss_curve(
        tmp_path, tiny_config, tiny_epoch_config, reference_losses, loop,
        how):
    """Killed after iteration 5 -- the signal sent to the whole process
    group, two data-loader workers included, as torchrun, Slurm and a
    terminal's Ctrl-C send it -- and resumed with --resume: the losses of
    every later iteration equal the uninterrupted run's. The epoch-based
    runs (3 iterations per epoch) stop mid-epoch and must continue at the
    next batch, not restart the epoch. (A hard kill of the iteration-based
    loop resumes from the same periodic checkpoints as the epoch-based
    one's, through the same resume path as its stop on SIGINT.)"""
    config, iters, interval = {'iter': (tiny_config, 9, 3),
                               'epoch': (tiny_epoch_config, 12, 4)}[loop]
    work_dir = tmp_path / 'work'
    proc = _run_until(_train_cmd(config, work_dir, *WORKERS), work_dir, 5)
    os.killpg(proc.pid, getattr(signal, how))
    code = proc.wait(timeout=120)
    resume_point = _checkpoint_iteration(work_dir / 'last_checkpoint')
    if how == 'SIGKILL':
        assert code == -signal.SIGKILL
        assert resume_point % interval == 0  # a periodic checkpoint
    else:
        # SIGTERM / SIGINT: the iteration in flight finishes and is saved
        assert code == 128 + getattr(signal, how)
        assert resume_point >= 5
    if loop == 'epoch' and how == 'SIGKILL':
        assert resume_point % 3 != 0  # mid-epoch
    assert not [p for p in os.listdir(work_dir) if '.partial' in p]
    # a process of its own: the training forks a data-loader worker; made
    # in the test process (after OpenVINO's threads had run in it), these
    # runs segfaulted the full suite
    subprocess.run(_train_cmd(config, work_dir, '--resume', *WORKERS),
                   check=True, capture_output=True, cwd=REPO, timeout=600)
    runs = sorted(d for d in os.listdir(work_dir)
                  if osp.isdir(work_dir / d))
    resumed = _logged_losses(work_dir / runs[-1])
    assert sorted(resumed) == list(range(resume_point + 1, iters + 1))
    for iteration, loss in resumed.items():
        assert loss == pytest.approx(reference_losses[loop][iteration],
                                     abs=1e-6)


def test_resume_survives_an_empty_last_checkpoint_record(tmp_path):
    """mmengine writes last_checkpoint with a plain open(); a crash can
    leave it empty or naming a deleted file. --resume then takes the newest
    checkpoint in the work dir."""
    from repvgg_seg.training import find_resume_checkpoint
    assert find_resume_checkpoint(str(tmp_path)) is None
    for i, name in enumerate(('iter_4.pth', 'epoch_1.pth', 'iter_8.pth')):
        (tmp_path / name).write_bytes(b'x')
        os.utime(tmp_path / name, (1000 + i, 1000 + i))
    record = tmp_path / 'last_checkpoint'
    record.write_text(str(tmp_path / 'epoch_1.pth'))
    assert find_resume_checkpoint(str(tmp_path)) == str(tmp_path /
                                                        'epoch_1.pth')
    for broken in ('', str(tmp_path / 'iter_12.pth')):
        record.write_text(broken)
        assert find_resume_checkpoint(str(tmp_path)) == str(tmp_path /
                                                            'iter_8.pth')
    (tmp_path / 'iter_8.pth').write_bytes(b'')  # never a 0-byte file
    assert find_resume_checkpoint(str(tmp_path)) == str(tmp_path /
                                                        'epoch_1.pth')


def test_atomic_checkpoint_write_keeps_previous_file(tmp_path, monkeypatch):
    """A failure mid-write (here: a full disk) leaves the previous file
    intact and no partial file behind, with an error naming the file."""
    from mmengine.runner.checkpoint import save_checkpoint

    import repvgg_seg  # noqa: F401  (registers the atomic backend)
    target = tmp_path / 'iter_3.pth'
    save_checkpoint({'state_dict': {'w': torch.ones(2)}}, str(target))
    before = target.read_bytes()

    real_fsync = os.fsync

    def full_disk(fd):
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(os, 'fsync', full_disk)
    with pytest.raises(OSError, match='could not write .*iter_3.pth: the '
                       'disk is full; earlier files are untouched'):
        save_checkpoint({'state_dict': {'w': torch.zeros(2)}}, str(target))
    monkeypatch.setattr(os, 'fsync', real_fsync)
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ['iter_3.pth']


def _evil_checkpoint(path, marker):
    class Exploit:
        def __reduce__(self):
            return (os.system, (f'touch {marker}',))

    torch.save({'state_dict': {'w': torch.zeros(1)}, 'x': Exploit()}, path)


def test_malicious_checkpoint_refused_on_every_path(tmp_path, tiny_config,
                                                    capsys):
    """A checkpoint whose unpickling would create a file is refused by the
    backbone's init_cfg, load_from, --resume, and the test, convert, export
    and benchmark tools; the file is never created, nor any output."""
    from repvgg_seg import UnsafeCheckpointError, load_checkpoint_file
    from repvgg_seg.models import RepVGG
    marker = tmp_path / 'pwned'
    evil = tmp_path / 'evil.pth'
    _evil_checkpoint(evil, marker)

    # the loader itself: weights-only with the allow-list, which names the
    # refused global and the way out
    with pytest.raises(UnsafeCheckpointError, match=(
            f'refused to load {re.escape(str(evil))}: it needs objects '
            r'outside the allow-list of safe types \(.*posix\.system.*'
            r'--trust-checkpoint')):
        load_checkpoint_file(evil)
    assert not marker.exists()

    backbone = RepVGG('A0', init_cfg=dict(type='Pretrained',
                                          checkpoint=str(evil)))
    with pytest.raises(UnsafeCheckpointError, match='posix.system'):
        backbone.init_weights()

    from mmengine.runner import load_checkpoint
    with pytest.raises(UnsafeCheckpointError, match=f'refused to load {evil}'):
        load_checkpoint(torch.nn.Linear(1, 1), str(evil))

    work = str(tmp_path / 'work')
    options = ['--cfg-options', 'train_dataloader.num_workers=0',
               'train_dataloader.persistent_workers=False']
    for tool, args in (
            ('test', [tiny_config, str(evil), '--work-dir', work]),
            ('train', [tiny_config, '--work-dir', work, '--resume',
                       str(evil)] + options),
            ('train', [tiny_config, '--work-dir', work] + options +
             [f'load_from={evil}']),
            ('convert', [tiny_config, str(evil), str(tmp_path / 'd.pth')]),
            ('export_onnx', [tiny_config, str(evil),
                             str(tmp_path / 'm.onnx'), '--shape', '64',
                             '64']),
            ('benchmark', [tiny_config, '--checkpoint', str(evil),
                           '--shape', '64', '64', '--iters', '1'])):
        code, err = run_tool(tool, *args, capsys=capsys)
        assert code == 2, err
        assert 'refused to load' in err and '--trust-checkpoint' in err
    assert not marker.exists()
    assert not (tmp_path / 'd.pth').exists()
    assert not (tmp_path / 'm.onnx').exists()


def test_trust_flag_loads_a_trusted_pickle(tmp_path):
    from repvgg_seg import UnsafeCheckpointError, load_checkpoint_file
    path = tmp_path / 'trusted.pth'
    _untrusted_pickle(path)
    with pytest.raises(UnsafeCheckpointError,
                       match=_REFUSED.format(re.escape(str(path)))):
        load_checkpoint_file(path)
    loaded = load_checkpoint_file(path, trusted=True)
    assert torch.equal(loaded['state_dict']['w'], torch.zeros(1))
    assert _same_generator(loaded['extra'])


# What refusing the numpy Generator of _untrusted_pickle says (format with
# the escaped path).
# the reason names the class that is not allowed (the numpy Generator)
_REFUSED = (r'refused to load {}: it needs objects outside the allow-list '
            r'of safe types \(Unsupported global: GLOBAL '
            r'numpy\.random\._pickle\.__generator_ctor\)\. Unpickling such a '
            r'file can run arbitrary code\. If you trust where the file comes '
            r'from, pass --trust-checkpoint to the tool')


def _same_generator(rng) -> bool:
    """``rng`` is the unpickled ``np.random.default_rng(0)``."""
    return rng.integers(10**9) == np.random.default_rng(0).integers(10**9)


def _untrusted_pickle(path):
    """A checkpoint that needs a class outside the allow-list (a numpy
    Generator): refused unless trusted."""
    torch.save({'state_dict': {'w': torch.zeros(1)},
                'extra': np.random.default_rng(0)}, path)


def test_trust_is_scoped_to_one_command_or_config(tmp_path, monkeypatch,
                                                  tiny_config):
    """Trust from --trust-checkpoint, a config's ``trust_checkpoint`` or
    the environment applies where it is given and never leaks into later
    loads of the same process."""
    from repvgg_seg import (CheckpointError, UnsafeCheckpointError,
                            load_checkpoint_file, trusted_checkpoints)
    from repvgg_seg.apis import load_model
    from repvgg_seg.config import load_config
    from repvgg_seg.io.checkpoint import TRUST_ENV, trust_checkpoints
    path = tmp_path / 'pickle.pth'
    _untrusted_pickle(path)
    monkeypatch.delenv(TRUST_ENV, raising=False)
    assert not trust_checkpoints()
    refused = pytest.raises(UnsafeCheckpointError,
                            match=_REFUSED.format(re.escape(str(path))))
    with trusted_checkpoints():
        assert _same_generator(load_checkpoint_file(path)['extra'])
    with refused:
        load_checkpoint_file(path)  # the block ended: trust is gone

    # a config that trusts: loading it changes nothing global, and the
    # model load it drives is trusted (it gets to the state-dict check)
    trusting = tmp_path / 'trusting.py'
    trusting.write_text(f'_base_ = [{tiny_config!r}]\n'
                        'trust_checkpoint = True\n')
    load_config(str(trusting))
    assert not trust_checkpoints()
    with pytest.raises(CheckpointError, match=f'{path} does not fit the '
                       'model: missing keys: backbone.stage0'):
        load_model(str(trusting), str(path))
    with refused:
        load_model(tiny_config, str(path))
    assert not trust_checkpoints()

    # the command-line flag: through the config of that command only
    import argparse

    from repvgg_seg.cli import add_config_args, parse_tool_args
    parser = argparse.ArgumentParser()
    add_config_args(parser)
    args = parse_tool_args(parser, ['--trust-checkpoint'])
    assert args.cfg_options == {'trust_checkpoint': True}
    assert not trust_checkpoints()

    # the environment variable, for whoever sets it
    monkeypatch.setenv(TRUST_ENV, '1')
    assert _same_generator(load_checkpoint_file(path)['extra'])
    monkeypatch.setenv(TRUST_ENV, '0')
    with refused:
        load_checkpoint_file(path)


def _fake_loop(batches_per_epoch, epoch, iteration):
    """A ResumableEpochBasedTrainLoop over a plain DataLoader, with a stub
    runner that records the batches it is given."""
    from types import SimpleNamespace

    from torch.utils.data import DataLoader

    from repvgg_seg.training import ResumableEpochBasedTrainLoop
    trained = []
    runner = SimpleNamespace(
        visualizer=SimpleNamespace(), call_hook=lambda *a, **k: None,
        model=SimpleNamespace(train=lambda: None))
    loader = DataLoader(list(range(2 * batches_per_epoch)), batch_size=2)
    loop = ResumableEpochBasedTrainLoop(runner, loader, max_epochs=3)
    loop.run_iter = lambda idx, batch: (trained.append((idx, batch.tolist())),
                                        setattr(loop, '_iter',
                                                loop._iter + 1))
    loop._epoch, loop._iter = epoch, iteration
    return loop, trained


def test_resumable_loop_continues_at_the_next_batch():
    loop, trained = _fake_loop(4, epoch=1, iteration=6)  # 2 of 4 done
    loop.run_epoch()
    assert trained == [(2, [4, 5]), (3, [6, 7])]
    assert (loop.epoch, loop.iter) == (2, 8)
    loop.run_epoch()  # the next epoch is whole
    assert [idx for idx, _ in trained[2:]] == [0, 1, 2, 3]
    # saved right after an epoch's last batch: nothing left but its end
    loop, trained = _fake_loop(4, epoch=0, iteration=4)
    loop.run_epoch()
    assert trained == [] and (loop.epoch, loop.iter) == (1, 4)


def test_resumable_loop_refuses_a_changed_epoch_length():
    loop, _ = _fake_loop(3, epoch=1, iteration=10)
    with pytest.raises(ValueError, match='checkpoint is at iteration 10 of '
                       'epoch 2, but an epoch now has only 3 iterations'):
        loop.run_epoch()


def _two_ranks(scenarios: dict) -> dict:
    """Run every ``name: (target, *args)`` of ``scenarios``, in turn, as
    ``target(rank, *args)`` in one 2-process gloo group (one start of the
    processes for all); returns ``{name: {rank: what target returned}}``."""
    import torch.multiprocessing as mp
    port = free_port()
    results = mp.Manager().dict()
    mp.spawn(_rank_main, args=(port, results, scenarios), nprocs=2,
             join=True)
    return {name: {rank: results[name, rank] for rank in (0, 1)}
            for name in scenarios}


def _rank_main(rank, port, results, scenarios):
    import torch.distributed as dist
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}',
                            rank=rank, world_size=2)
    try:
        for name, (target, *args) in scenarios.items():
            results[name, rank] = target(rank, *args)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope='module')
def two_rank_runs(tmp_path_factory):
    """The 2-rank scenarios of this module, run in one process group."""
    folders = {name: str(tmp_path_factory.mktemp(name))
               for name in ('sigterm', 'sigterm_with_loss_hook')}
    runs = _two_ranks({
        'sigterm': (_sigterm_on_rank0, folders['sigterm']),
        'sigterm_with_loss_hook': (_sigterm_on_rank0,
                                   folders['sigterm_with_loss_hook'], True),
        'nan': (_nan_on_rank1, ),
        'rank_states': (_rank_states, )})
    return runs, folders


def _stub_runner(work_dir, saved, hooks=()):
    from types import SimpleNamespace
    return SimpleNamespace(
        iter=0, work_dir=work_dir, hooks=list(hooks),
        message_hub=SimpleNamespace(get_info=lambda key: None),
        save_checkpoint=lambda folder, name, **kw: saved.append(name))


def _sigterm_on_rank0(rank, work_dir, with_finite_loss_hook=False):
    """6 iterations through SignalCheckpointHook (and FiniteLossHook before
    it, the configs' pair); rank 0 alone gets SIGTERM during iteration 3.
    Returns where each rank stopped, the checkpoints saved and how many
    all-reduces the rank made."""
    import torch.distributed as dist

    from repvgg_seg.training import FiniteLossHook, SignalCheckpointHook
    calls = []
    real = dist.all_reduce

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    dist.all_reduce = counted
    saved = []
    signals = SignalCheckpointHook()
    hooks = ([FiniteLossHook()] if with_finite_loss_hook else []) + [signals]
    runner = _stub_runner(work_dir, saved, hooks=hooks)
    signals.before_train(runner)
    try:
        for i in range(6):
            runner.iter = i
            if rank == 0 and i == 2:
                os.kill(os.getpid(), signal.SIGTERM)
            else:
                time.sleep(0.05 * rank)  # the ranks are not in lockstep
            try:
                for hook in hooks:
                    hook.after_train_iter(
                        runner, i, outputs={'loss': torch.tensor(1.0)})
            except SystemExit as exc:
                return (i, exc.code, saved, len(calls))
        return None
    finally:
        dist.all_reduce = real


def test_sigterm_on_one_rank_stops_every_rank_after_the_same_iteration(
        two_rank_runs):
    runs, folders = two_rank_runs
    results = runs['sigterm']
    expected = (2, 128 + signal.SIGTERM, ['iter_3.pth'], 3)
    assert results[0] == expected and results[1] == expected
    last = osp.join(folders['sigterm'], 'last_checkpoint')
    assert open(last).read().endswith('iter_3.pth')


def _nan_on_rank1(rank):
    """6 iterations through FiniteLossHook; rank 1's loss is NaN in
    iteration 3."""
    from repvgg_seg import NonFiniteLossError
    from repvgg_seg.training import FiniteLossHook
    runner = _stub_runner('', [])
    hook = FiniteLossHook()
    for i in range(6):
        runner.iter = i
        loss = float('nan') if rank == 1 and i == 2 else 1.0
        try:
            hook.after_train_iter(runner, i, outputs={
                'loss': torch.tensor(loss), 'decode.loss_ce':
                torch.tensor(loss)})
        except NonFiniteLossError as exc:
            return (i, str(exc))
    return None


def test_nan_loss_on_one_rank_stops_every_rank(two_rank_runs):
    results = two_rank_runs[0]['nan']
    assert results[0][0] == results[1][0] == 2
    assert results[1][1].startswith('the training loss became nan on rank 1 '
                                    'at iteration 3 (loss=nan, '
                                    'decode.loss_ce=nan)')
    assert results[0][1].startswith('the training loss became non-finite on '
                                    'another rank at iteration 3; training '
                                    'stopped and no checkpoint was saved')


def test_one_all_reduce_per_iteration_stops_every_rank_together(
        two_rank_runs):
    """The configs' finite-loss and signal hooks agree over the ranks in one
    all-reduce per iteration (a blocking collective with a host-device copy
    on GPUs), not one each."""
    results = two_rank_runs[0]['sigterm_with_loss_hook']
    expected = (2, 128 + signal.SIGTERM, ['iter_3.pth'], 3)
    assert results[0] == expected and results[1] == expected


def _send_signals(names, pipe):
    """In a forked child: SignalCheckpointHook's handlers, then the signals
    in turn; reports the signal the hook keeps, or the exception."""
    from repvgg_seg.training import SignalCheckpointHook

    # as in a fresh process (earlier tests may have left others behind)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    hook = SignalCheckpointHook()
    hook.before_train(None)
    try:
        for name in names:
            os.kill(os.getpid(), getattr(signal, name))
            time.sleep(0.01)  # the handler runs between bytecodes
        pipe.send(('alive', hook.received))
    except KeyboardInterrupt:
        pipe.send(('KeyboardInterrupt', hook.received))


@pytest.mark.parametrize('signals,outcome', [
    (['SIGTERM', 'SIGTERM'], ('alive', signal.SIGTERM)),
    (['SIGINT', 'SIGTERM'], ('alive', signal.SIGINT)),
    (['SIGINT', 'SIGINT'], ('KeyboardInterrupt', signal.SIGINT))])
def test_a_repeated_sigterm_still_saves_a_second_sigint_stops_at_once(
        signals, outcome):
    """torchrun forwards the SIGTERM its tasks got from the process group:
    the second one must not cancel the save (nor kill the process). A
    second Ctrl-C stops at once. (A forked child: a regression kills it,
    not the suite.)"""
    import multiprocessing
    context = multiprocessing.get_context('fork')
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_send_signals, args=(signals, send))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0, f'the child died: exit code {child.exitcode}'
    assert receive.recv() == outcome


@pytest.mark.parametrize('map_location', ['meta', 'remap'])
def test_random_states_resume_from_a_checkpoint_loaded_anywhere(
        tmp_path, map_location):
    """mmengine's resume loads with map_location=get_device() ('cuda' on a
    GPU): the saved random states must come back whatever device the
    checkpoint's tensors were mapped to (here the meta device, which keeps
    no values, or a remap function)."""
    import random
    from types import SimpleNamespace

    from repvgg_seg.training import RandomStateHook

    def draws():
        return (torch.rand(3).tolist(), np.random.rand(3).tolist(),
                random.random())

    hook = RandomStateHook()
    checkpoint = {'state_dict': {'w': torch.ones(2)}}
    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    hook.before_save_checkpoint(None, checkpoint)
    expected = draws()
    path = tmp_path / 'iter_1.pth'
    torch.save(checkpoint, path)
    location = ('meta' if map_location == 'meta' else
                (lambda storage, where: torch.UntypedStorage(
                    storage.nbytes(), device='meta')))
    loaded = torch.load(path, map_location=location, weights_only=False)
    assert loaded['state_dict']['w'].is_meta  # mapped indeed
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    hook.after_load_checkpoint(SimpleNamespace(_resume=True), loaded)
    assert draws() == expected


def _rank_states(rank):
    """Rank ``rank`` seeds itself apart, gathers every rank's states as
    ResumableRunner's save does, and restores its own from the gathered
    list (the checkpoint) after drawing more."""
    import random

    from repvgg_seg.training.state import (gather_rng_states, rank_rng_state,
                                           set_rng_state)
    torch.manual_seed(10 + rank), random.seed(10 + rank)
    np.random.seed(10 + rank)
    states = gather_rng_states()
    expected = torch.rand(2).tolist()
    torch.rand(5)
    set_rng_state(rank_rng_state(states))
    return len(states), expected, torch.rand(2).tolist()


def test_every_rank_restores_its_own_random_state(two_rank_runs):
    results = two_rank_runs[0]['rank_states']
    assert results[0][0] == results[1][0] == 2
    assert results[0][1] != results[1][1]  # the ranks differ
    for rank in (0, 1):
        assert results[rank][2] == results[rank][1]


def test_another_rank_count_resumes_with_a_warning(monkeypatch):
    """Resumed on 3 ranks from a 2-rank checkpoint: rank 1 restores its own
    state, rank 2 keeps its seeded one, both with the warning."""
    from repvgg_seg.training import state as rng
    states = [rng.get_rng_state(), rng.get_rng_state()]
    monkeypatch.setattr(rng, 'get_world_size', lambda: 3)
    for rank, expected in ((1, states[1]), (2, None)):
        monkeypatch.setattr(rng, 'get_rank', lambda: rank)
        with captured_log() as log:
            assert rng.rank_rng_state(states) is expected
        assert [m for m in log.messages if m.startswith(
            'the checkpoint holds the random states of 2 ranks, this run '
            'has 3: each rank restores its own where there is one, ranks 2 '
            'and above keep their seeded state')]


def _dist_train_cmd(config, work_dir, *extra, ranks=2):
    return ['bash', osp.join(REPO, 'tools', 'dist_train.sh'), config,
            str(ranks), '--work-dir', str(work_dir), '--cfg-options',
            'randomness.diff_rank_seed=True', *extra]


def _interrupted_and_uninterrupted(make_cmd, tmp_path, iters=9):
    """An uninterrupted run of ``make_cmd(work_dir, *extra)``, and one whose
    process group gets SIGTERM after iteration 5, resumed with --resume:
    ``(uninterrupted losses, resumed losses, resumed from)``."""
    env = dict(os.environ, OMP_NUM_THREADS='1',
               PATH=f'{osp.dirname(sys.executable)}{os.pathsep}'
               f'{os.environ["PATH"]}')
    reference = tmp_path / 'reference'
    done = subprocess.run(make_cmd(reference), capture_output=True,
                          text=True, cwd=REPO, timeout=600,
                          env=dict(env, PORT=str(free_port())))
    assert done.returncode == 0, done.stderr[-3000:]
    expected = _logged_losses(reference)
    assert sorted(expected) == list(range(1, iters + 1))

    work_dir = tmp_path / 'work'
    proc = _run_until(make_cmd(work_dir), work_dir, 5,
                      env=dict(env, PORT=str(free_port())))
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=120)
    resume_point = _checkpoint_iteration(work_dir / 'last_checkpoint')
    assert 5 <= resume_point < iters
    done = subprocess.run(make_cmd(work_dir, '--resume'),
                          capture_output=True, text=True, cwd=REPO,
                          timeout=600, env=dict(env, PORT=str(free_port())))
    assert done.returncode == 0, done.stderr[-3000:]
    runs = sorted(d for d in os.listdir(work_dir) if osp.isdir(work_dir / d))
    resumed = _logged_losses(work_dir / runs[-1])
    assert sorted(resumed) == list(range(resume_point + 1, iters + 1))
    return expected, resumed, resume_point


def test_two_ranks_killed_and_resumed_continue_the_same_loss_curve(
        tmp_path, tiny_config):
    """Two gloo ranks (torchrun), each with its own random state (seeded
    apart) and a data-loader worker, get SIGTERM in their whole process
    group after iteration 5 and resume with --resume: the losses equal an
    uninterrupted 2-rank run's. Each rank must restore its own random
    state (the dropout masks of rank 1 change the all-reduced gradients)."""
    expected, resumed, _ = _interrupted_and_uninterrupted(
        lambda work_dir, *extra: _dist_train_cmd(tiny_config, work_dir,
                                                 *extra), tmp_path)
    for iteration, loss in resumed.items():
        assert loss == pytest.approx(expected[iteration], abs=1e-6)


# On a GPU (pytest -m gpu): deterministic cuDNN (the tiny config's
# randomness.deterministic); CUDA's atomics in a few backward kernels
# (bilinear upsampling) may still differ in the last bits, hence 1e-6.

@pytest.mark.gpu
def test_gpu_training_killed_in_its_process_group_resumes_exactly(
        tmp_path, tiny_config):
    expected, resumed, _ = _interrupted_and_uninterrupted(
        lambda work_dir, *extra: _train_cmd(tiny_config, work_dir, *extra,
                                            *WORKERS), tmp_path)
    for iteration, loss in resumed.items():
        assert loss == pytest.approx(expected[iteration], abs=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2,
                    reason='needs two CUDA devices')
def test_gpu_two_ranks_killed_and_resumed_continue_the_same_loss_curve(
        tmp_path, tiny_config):
    """NCCL, SyncBN as the Table 8 configs, one GPU a rank."""
    expected, resumed, _ = _interrupted_and_uninterrupted(
        lambda work_dir, *extra: _dist_train_cmd(
            tiny_config, work_dir, 'env_cfg.dist_cfg.backend=nccl',
            "model.backbone.norm_cfg.type='SyncBN'", *extra), tmp_path)
    for iteration, loss in resumed.items():
        assert loss == pytest.approx(expected[iteration], abs=1e-6)
