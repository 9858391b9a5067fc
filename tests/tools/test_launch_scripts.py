"""The launch scripts in tools/ (mmseg's conventions): they parse, build the
srun and torchrun command lines mmseg's do, and a 2-rank CPU test run
gives the mIoU of one process."""
import glob
import json
import os
import os.path as osp
import stat
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.helpers import free_port, run_tool

SCRIPTS = sorted(osp.basename(p)
                 for p in glob.glob(osp.join(REPO, 'tools', '*.sh')))


def test_mmsegs_scripts_are_there():
    assert {'dist_test.sh', 'dist_train.sh', 'slurm_test.sh',
            'slurm_train.sh'} <= set(SCRIPTS)


@pytest.mark.parametrize('script', SCRIPTS)
def test_script_parses_and_is_executable(script):
    path = osp.join(REPO, 'tools', script)
    subprocess.run(['bash', '-n', path], check=True)
    assert os.stat(path).st_mode & stat.S_IXUSR


def _stand_in(tmp_path, name):
    """A ``name`` command on PATH that records its arguments (one a line)
    and its environment, then succeeds."""
    folder = tmp_path / 'bin'
    folder.mkdir(exist_ok=True)
    command = folder / name
    command.write_text('#!/usr/bin/env bash\n'
                       f'printf "%s\\n" "$@" > "{tmp_path}/{name}.args"\n'
                       f'env > "{tmp_path}/{name}.env"\n')
    command.chmod(0o755)
    return folder


def _launch(tmp_path, command, script, *args, **env):
    """Run ``tools/<script> args`` from the repository root with a stand-in
    ``command``; returns (its arguments, its environment)."""
    folder = _stand_in(tmp_path, command)
    environ = dict(os.environ, **env)
    environ['PATH'] = f'{folder}{os.pathsep}{os.environ["PATH"]}'
    for key in ('GPUS', 'GPUS_PER_NODE', 'CPUS_PER_TASK', 'SRUN_ARGS',
                'NNODES', 'NODE_RANK', 'MASTER_ADDR', 'PORT'):
        if key not in env:
            environ.pop(key, None)
    subprocess.run(['bash', f'tools/{script}', *args], cwd=REPO, env=environ,
                   check=True, capture_output=True)
    argv = (tmp_path / f'{command}.args').read_text().splitlines()
    recorded = dict(line.split('=', 1) for line in (
        tmp_path / f'{command}.env').read_text().splitlines() if '=' in line)
    return argv, recorded


SRUN_DEFAULTS = ['--cpus-per-task=5', '--kill-on-bad-exit=1']


def test_slurm_train_builds_mmsegs_srun_line(tmp_path):
    argv, env = _launch(
        tmp_path, 'srun', 'slurm_train.sh', 'gpu', 'psp_b1g2',
        'configs/pspnet_repvgg_b1g2_fast.py', 'work_dirs/b1g2', '--amp',
        GPUS='16', GPUS_PER_NODE='8', CPUS_PER_TASK='4',
        SRUN_ARGS='--time=48:00:00 --qos=high')
    assert argv == [
        '-p', 'gpu', '--job-name=psp_b1g2', '--gres=gpu:8', '--ntasks=16',
        '--ntasks-per-node=8', '--cpus-per-task=4', '--kill-on-bad-exit=1',
        '--time=48:00:00', '--qos=high',
        'python', '-u', 'tools/train.py',
        'configs/pspnet_repvgg_b1g2_fast.py', '--work-dir=work_dirs/b1g2',
        '--launcher=slurm', '--amp']
    # the repository is importable in every task, installed or not
    assert env['PYTHONPATH'].split(os.pathsep)[0] == REPO


def test_slurm_train_defaults_and_no_work_dir(tmp_path):
    argv, _ = _launch(tmp_path, 'srun', 'slurm_train.sh', 'p', 'job',
                      'configs/x.py', '--resume')
    assert argv == ['-p', 'p', '--job-name=job', '--gres=gpu:8',
                    '--ntasks=8', '--ntasks-per-node=8', *SRUN_DEFAULTS,
                    'python', '-u', 'tools/train.py', 'configs/x.py',
                    '--launcher=slurm', '--resume']


def test_slurm_test_builds_mmsegs_srun_line(tmp_path):
    argv, _ = _launch(tmp_path, 'srun', 'slurm_test.sh', 'p', 'job',
                      'configs/x.py', 'work_dirs/x/epoch_40.pth', '--fuse')
    assert argv == ['-p', 'p', '--job-name=job', '--gres=gpu:4',
                    '--ntasks=4', '--ntasks-per-node=4', *SRUN_DEFAULTS,
                    'python', '-u', 'tools/test.py', 'configs/x.py',
                    'work_dirs/x/epoch_40.pth', '--launcher=slurm', '--fuse']


@pytest.mark.parametrize('script,args,tool', [
    ('dist_train.sh', ['configs/x.py', '8', '--amp'],
     ['tools/train.py', 'configs/x.py', '--launcher', 'pytorch', '--amp']),
    ('dist_test.sh', ['configs/x.py', 'x.pth', '8', '--fuse'],
     ['tools/test.py', 'configs/x.py', 'x.pth', '--launcher', 'pytorch',
      '--fuse'])])
def test_dist_scripts_build_the_torchrun_line(tmp_path, script, args, tool):
    argv, _ = _launch(tmp_path, 'python', script, *args, NNODES='2',
                      NODE_RANK='1', MASTER_ADDR='10.0.0.1', PORT='29700')
    assert argv == ['-m', 'torch.distributed.run', '--nnodes=2',
                    '--node_rank=1', '--master_addr=10.0.0.1',
                    '--nproc_per_node=8', '--master_port=29700', *tool]
    argv, _ = _launch(tmp_path, 'python', script, *args)
    assert argv[2:7] == ['--nnodes=1', '--node_rank=0',
                         '--master_addr=127.0.0.1', '--nproc_per_node=8',
                         '--master_port=29500']


@pytest.mark.parametrize('script,needed', [
    ('dist_train.sh', 2), ('dist_test.sh', 3), ('slurm_train.sh', 3),
    ('slurm_test.sh', 4)])
def test_too_few_arguments_print_the_usage(script, needed):
    done = subprocess.run(['bash', f'tools/{script}', *['x'] * (needed - 1)],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.startswith(f'usage: tools/{script} ')


def test_dist_test_on_two_cpu_ranks_gives_the_mIoU_of_one(
        tiny_trained, tmp_path, capsys):
    """Each rank tests one of the 2 val images (gloo); the metric gathers
    both."""
    options = [f'{k}={v}' for k, v in tiny_trained['options'].items()]
    single = tmp_path / 'single.json'
    code, err = run_tool('test', tiny_trained['config'],
                         tiny_trained['checkpoint'], '--work-dir',
                         str(tmp_path / 'single'), '--out-json', str(single),
                         '--cfg-options', *options, capsys=capsys)
    assert code == 0, err

    ranks = tmp_path / 'ranks.json'
    env = dict(os.environ, PORT=str(free_port()),
               PATH=f'{osp.dirname(sys.executable)}{os.pathsep}'
               f'{os.environ["PATH"]}', OMP_NUM_THREADS='1')
    done = subprocess.run(
        ['bash', 'tools/dist_test.sh', tiny_trained['config'],
         tiny_trained['checkpoint'], '2', '--work-dir',
         str(tmp_path / 'ranks'), '--out-json', str(ranks),
         '--cfg-options', *options, 'env_cfg.dist_cfg.backend=gloo'],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = (json.loads(p.read_text()) for p in (single, ranks))
    assert one.keys() == two.keys() and 'mIoU' in one
    assert two == pytest.approx(one, abs=1e-9)
