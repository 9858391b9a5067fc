"""The one pipeline of inference jobs, for images and video frames alike:
batches are read in a thread ahead of the model (:class:`Prefetcher`), run
by a pool of worker threads (OpenCV, torch and the runtimes release the
GIL, so the engine's requests stay busy while another batch is pre- or
post-processed), and handed back in this thread, in their order where the
order matters (the frames of a video).
"""
import queue
import sys
import threading
import time
from collections import deque
from concurrent.futures import (FIRST_COMPLETED, Future, ThreadPoolExecutor,
                                wait)
from typing import (Callable, Deque, Iterable, Iterator, Optional, Tuple,
                    TypeVar)

from mmengine.utils import ProgressBar

Batch = TypeVar('Batch')
Result = TypeVar('Result')


class Prefetcher:
    """Runs ``produce()`` (a generator) in a thread, ``depth`` items
    ahead of the consumer; :meth:`close` stops it."""

    _END = object()

    def __init__(self, produce, depth: int = 2):
        self.queue = queue.Queue(maxsize=depth)
        self.error = None
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(produce, ),
                                       daemon=True)
        self.thread.start()

    def _run(self, produce) -> None:
        try:
            for item in produce():
                if self.stopped.is_set():
                    break
                self.queue.put(item)
        except BaseException as exc:  # re-raised in the consumer
            self.error = exc
        finally:
            self.queue.put(self._END)

    def __iter__(self):
        while True:
            item = self.queue.get()
            if item is self._END:
                if self.error is not None:
                    raise self.error
                return
            yield item

    def close(self) -> None:
        """Stop producing and wait for the thread, so that what it reads
        from (a video capture) can be released."""
        self.stopped.set()
        while self.thread.is_alive():
            try:  # unblocks a put on the full queue
                self.queue.get(timeout=0.1)
            except queue.Empty:
                pass
        self.thread.join()


class Progress:
    """mmengine's progress bar on stderr (none where the total is not
    known) and the seconds since the work began."""

    def __init__(self, total: Optional[int]):
        self.bar = ProgressBar(total, file=sys.stderr) if total else None
        self.start = time.perf_counter()

    def update(self, count: int = 1) -> None:
        if self.bar is not None:
            for _ in range(count):
                self.bar.update()

    def close(self) -> float:
        """Ends the bar's line; returns the seconds taken."""
        if self.bar is not None:
            sys.stderr.write('\n')
        return time.perf_counter() - self.start


def batched(items: Iterable, size: int) -> Iterator[list]:
    """``items`` in lists of ``size`` (the last one shorter)."""
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _finish_one(running: Deque[Tuple[Batch, Future]],
                finish: Callable[[Batch, Result], None],
                ordered: bool) -> None:
    """Waits for the oldest batch (``ordered``) or for any, and finishes
    what is done."""
    if ordered:
        batch, future = running.popleft()
        finish(batch, future.result())
        return
    done, _ = wait([future for _, future in running],
                   return_when=FIRST_COMPLETED)
    for entry in [entry for entry in running if entry[1] in done]:
        running.remove(entry)
        finish(entry[0], entry[1].result())


def run_pipeline(produce: Callable[[], Iterable[Batch]],
                 work: Callable[[Batch], Result],
                 finish: Callable[[Batch, Result], None],
                 workers: Callable[[], int], first_alone: bool = False,
                 ordered: bool = False, depth: int = 4) -> None:
    """Runs ``work`` on every batch that ``produce()`` yields (in a thread,
    ``depth`` batches ahead) in a pool of ``workers()`` threads, and calls
    ``finish(batch, result)`` in this thread: in the batches' order when
    ``ordered``, else as they complete. At most ``workers() + 1`` batches
    are in the pool at once and ``depth`` read ahead (they bound the
    memory). ``first_alone``: the first
    batch runs before the pool starts and ``workers()`` is asked after it
    (an engine that makes its runner at the first input knows its
    concurrency then)."""
    prefetcher = Prefetcher(produce, depth=depth)
    batches = iter(prefetcher)
    try:
        if first_alone:
            first = next(batches, None)
            if first is None:
                return
            finish(first, work(first))
        _run_pool(batches, work, finish, workers(), ordered)
    finally:
        prefetcher.close()


def _run_pool(batches: Iterable[Batch], work: Callable[[Batch], Result],
              finish: Callable[[Batch, Result], None], count: int,
              ordered: bool) -> None:
    with ThreadPoolExecutor(max_workers=count) as pool:
        running = deque()
        for batch in batches:
            running.append((batch, pool.submit(work, batch)))
            if len(running) > count:
                _finish_one(running, finish, ordered)
        while running:
            _finish_one(running, finish, ordered=True)
