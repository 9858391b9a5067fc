"""What a resumed run needs to continue exactly: the random states of the
process, the checkpoint to continue from, and agreement between the ranks of
a distributed run."""
import glob
import os.path as osp
import random
from typing import List, Optional, Sequence

import numpy as np
import torch
from mmengine.dist import (all_gather_object, get_comm_device, get_rank,
                           get_world_size, is_distributed)
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
    """The torch, numpy, python and CUDA random states of this process, in
    a form no ``map_location`` moves: torch's as bytes (a checkpoint loaded
    with ``map_location='cuda'`` would otherwise hand ``torch.set_rng_state``
    a CUDA tensor, which it refuses), and CUDA's of this process's device
    only (a rank uses one GPU; another run may see fewer)."""
    return dict(torch=_as_bytes(torch.get_rng_state()),
                numpy=np.random.get_state(), python=random.getstate(),
                cuda=(_as_bytes(torch.cuda.get_rng_state())
                      if torch.cuda.is_available() else None))


def set_rng_state(state: dict) -> None:
    """Restore what :func:`get_rng_state` returned (also from a checkpoint
    loaded onto any device). The CUDA state goes to this process's device
    when it has one."""
    torch.set_rng_state(_as_byte_tensor(state['torch']))
    np.random.set_state(state['numpy'])
    random.setstate(_as_tuple(state['python']))
    cuda = state.get('cuda')
    if isinstance(cuda, (list, tuple)):  # checkpoints before 0.2: every GPU
        cuda = cuda[0] if cuda else None
    if cuda is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(_as_byte_tensor(cuda))


def _as_bytes(state: torch.Tensor) -> bytes:
    return state.numpy().tobytes()


def _as_byte_tensor(state) -> torch.Tensor:
    """A CPU ``ByteTensor`` from bytes, or from a state tensor of an older
    checkpoint on any device that holds its data."""
    if isinstance(state, (bytes, bytearray)):
        return torch.frombuffer(bytearray(state), dtype=torch.uint8)
    if state.is_meta:
        raise ValueError('the random state was loaded onto the meta device, '
                         'which keeps no values')
    return state.to('cpu', torch.uint8)


def _as_tuple(value):
    # python's random state is nested tuples; keep it so after a round trip
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuple(v) for v in value)
    return value


def gather_rng_states() -> List[dict]:
    """Every rank's :func:`get_rng_state`, by rank (a collective: every
    rank must call it); this process's alone when not distributed."""
    state = get_rng_state()
    return all_gather_object(state) if is_distributed() else [state]


def rank_rng_state(states: Sequence[dict]) -> Optional[dict]:
    """This rank's state among a checkpoint's per-rank ``states``; with
    another number of ranks than the checkpoint's, a warning, and the state
    of this rank where the checkpoint has one (``None`` otherwise: the rank
    keeps its seeded state)."""
    rank, world_size = get_rank(), get_world_size()
    if len(states) != world_size:
        kept = (f'ranks {len(states)} and above keep their seeded state'
                if len(states) < world_size else
                f'the states of ranks {world_size} and above are unused')
        print_log(f'the checkpoint holds the random states of {len(states)} '
                  f'ranks, this run has {world_size}: each rank restores its '
                  f'own where there is one, {kept}; the run does not continue '
                  'exactly as an uninterrupted one would', logger='current',
                  level=30)
    return states[rank] if rank < len(states) else None


def agree_over_ranks(flags: Sequence[int]) -> List[int]:
    """The element-wise maximum of ``flags`` (small non-negative ints) over
    the ranks of a distributed run, in one all-reduce on the communication
    device (a GPU under NCCL); ``flags`` themselves otherwise."""
    if not is_distributed():
        return [int(f) for f in flags]
    tensor = torch.tensor(list(flags), dtype=torch.int64,
                          device=get_comm_device())
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
    return tensor.tolist()


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
