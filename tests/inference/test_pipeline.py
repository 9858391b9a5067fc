"""The one pipeline of inference jobs (:mod:`repvgg_seg.inference.pipeline`):
batches read ahead in a thread, run by a pool of workers, finished in this
thread in order where asked, with a bound on the batches held."""
import random
import threading
import time

import pytest

from repvgg_seg.inference.pipeline import Prefetcher, batched, run_pipeline


def jittery_work(held, lock):
    """A worker that takes 0-4 ms and records how many batches are between
    their start and their finish."""
    rng = random.Random(0)

    def work(batch):
        with lock:
            held.append(held[-1] + 1)
        time.sleep(rng.random() * 0.004)
        return [x * 10 for x in batch]
    return work


@pytest.mark.parametrize('ordered', [True, False])
def test_every_batch_is_finished_once_holding_at_most_workers_plus_one(
        ordered):
    """23 items in batches of 4 over 3 workers: each batch finished once
    with its result (in the batches' order when ordered), and never more
    than 4 batches started and not finished."""
    held, lock, finished = [0], threading.Lock(), []
    work = jittery_work(held, lock)

    def finish(batch, result):
        assert result == [x * 10 for x in batch]
        finished.append(batch)
        with lock:
            held.append(held[-1] - 1)

    run_pipeline(lambda: batched(range(23), 4), work, finish,
                 workers=lambda: 3, ordered=ordered)
    expected = [list(range(k, min(k + 4, 23))) for k in range(0, 23, 4)]
    assert len(expected) == 6
    if ordered:
        assert finished == expected
    else:
        assert sorted(finished) == expected
    assert max(held) <= 4 and held[-1] == 0


def test_the_first_batch_runs_alone_before_the_workers_are_counted():
    """first_alone: the first batch is finished before ``workers()`` is
    asked (an engine that makes its runner at the first input)."""
    finished, asked = [], []

    def workers():
        asked.append(list(finished))
        return 2

    run_pipeline(lambda: batched('abcde', 2), lambda b: ''.join(b).upper(),
                 lambda b, r: finished.append(r), workers, first_alone=True,
                 ordered=True)
    assert asked == [['AB']]
    assert finished == ['AB', 'CD', 'E']
    # nothing to do: the workers are not counted
    run_pipeline(lambda: iter(()), str, print, workers, first_alone=True)
    assert len(asked) == 1


def test_a_failing_batch_stops_the_reader_and_raises():
    """An error in a worker is raised in the caller, and the thread reading
    ahead is stopped (so that its video can be released); an error while
    reading is raised too."""
    made = []

    def produce():
        for k in range(1000):
            made.append(k)
            yield [k]

    def work(batch):
        if batch == [3]:
            raise ValueError('batch 3 is broken')
        return batch

    threads = threading.active_count()
    with pytest.raises(ValueError, match='batch 3 is broken'):
        run_pipeline(produce, work, lambda b, r: None, lambda: 2)
    assert threading.active_count() == threads
    assert len(made) < 20

    def broken():
        yield [0]
        raise OSError('the disk went away')

    with pytest.raises(OSError, match='the disk went away'):
        run_pipeline(broken, list, lambda b, r: None, lambda: 1)


def test_prefetcher_reads_ahead_by_its_depth():
    """A consumer that has taken nothing yet has ``depth`` items waiting
    (plus the one the thread holds); closing stops the thread."""
    made = []

    def produce():
        for k in range(100):
            made.append(k)
            yield k

    prefetcher = Prefetcher(produce, depth=3)
    time.sleep(0.05)
    assert len(made) == 4
    assert next(iter(prefetcher)) == 0
    prefetcher.close()
    assert not prefetcher.thread.is_alive() and len(made) < 10
