"""What a resumed run needs to continue exactly: the random states of the
process, the checkpoint to continue from, and agreement between the ranks of
a distributed run."""
import glob
import os.path as osp
import random
from typing import Optional

import numpy as np
import torch
from mmengine.dist import all_reduce, is_distributed
from mmengine.logging import print_log


def bare_model(runner) -> torch.nn.Module:
    """The runner's model, outside its DDP wrapper and its test-time
    augmentation wrapper (``tools/test.py --tta``) if it has them: the
    model whose weights a checkpoint holds."""
    from mmengine.model import BaseTTAModel, is_model_wrapper
    model = runner.model
    if is_model_wrapper(model):
        model = model.module
    return model.module if isinstance(model, BaseTTAModel) else model


def get_rng_state() -> dict:
    """The torch, numpy, python and CUDA random states of this process."""
    return dict(torch=torch.get_rng_state(), numpy=np.random.get_state(),
                python=random.getstate(),
                cuda=(torch.cuda.get_rng_state_all()
                      if torch.cuda.is_available() else []))


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state['torch'])
    np.random.set_state(state['numpy'])
    random.setstate(_as_tuple(state['python']))
    if state['cuda'] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


def _as_tuple(value):
    # python's random state is nested tuples; keep it so after a round trip
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuple(v) for v in value)
    return value


def max_over_ranks(value: int) -> int:
    """The largest ``value`` over the ranks of a distributed run (one
    scalar all-reduce); ``value`` itself otherwise."""
    if not is_distributed():
        return value
    tensor = torch.tensor([value], dtype=torch.int64)
    all_reduce(tensor, op='max')
    return int(tensor.item())


def find_resume_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint ``--resume`` (without a path) continues from.

    mmengine's CheckpointHook records the latest checkpoint in
    ``work_dir/last_checkpoint`` with a plain ``open(..., 'w')``: a crash at
    the wrong moment leaves it empty, and a deleted checkpoint leaves it
    stale. The record is used when it names an existing, non-empty file;
    otherwise the newest ``*.pth`` in the work dir (checkpoints are written
    atomically, so every one there is complete). ``None`` when there is
    none.
    """
    record = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(record):
        with open(record) as f:
            named = f.read().strip()
        if named and osp.isfile(named) and osp.getsize(named) > 0:
            return named
        print_log(f'{record} names {named or "nothing"!r}, which is not a '
                  'checkpoint file; looking for the newest checkpoint in '
                  f'{work_dir}', logger='current', level=30)
    found = [p for p in glob.glob(osp.join(work_dir, '*.pth'))
             if osp.getsize(p) > 0]
    return max(found, key=osp.getmtime) if found else None
