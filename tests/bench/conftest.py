"""Fixtures of the benchmark's tests."""
import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: with two OpenMP threads on a 2-core machine that
    is busy with other work, every parallel region waits for a descheduled
    thread and these tiny models run tens of times slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
