"""A bounded load generator: POST images to the segmentation service at a
URL from a few concurrent clients and report what came back (requests/s,
latency percentiles, the count of each status).

It is built on aiohttp, an asyncio HTTP client: ``concurrency`` worker
tasks share one ``ClientSession`` whose connection pool holds as many
connections, so at most that many requests are in flight. A run is always
bounded twice: it stops after ``requests`` requests or once
``duration_s`` seconds have passed, whichever comes first, and a request
in flight when the time is up is waited for at most ``timeout_s``.

The latencies of the 200s and of the 503s are reported apart: a service
that sheds load should answer its 503s in a few milliseconds, and their
times would hide in (or flatter) the percentiles of the segmented images.
Errors on the client's side are counted by name, not raised: a request
that timed out is ``'timeout'``, a refused or dropped connection
``'connection'``, another client error ``'client-error'``.
"""
import asyncio
import mimetypes
import os.path as osp
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Union
from urllib.parse import urlsplit

from ..errors import InputError, check_choice
from .options import OUTPUTS

#: the endpoint a URL without a path is sent to
SEGMENT_PATH = '/v1/segment'
#: the names under which client-side failures are counted
TIMEOUT, CONNECTION, CLIENT_ERROR = 'timeout', 'connection', 'client-error'
#: the latency percentiles reported
PERCENTILES = (50, 95, 99)


@dataclass
class LoadOptions:
    """What to send where: ``url`` (the service, whose ``/v1/segment`` is
    used, or an endpoint's full URL), ``images`` (file paths, sent in turn;
    the Content-Type follows each file's suffix), ``output`` (the
    ``output=`` query: labels, color, overlay, json); how hard:
    ``concurrency`` requests in flight; when to stop: after ``requests``
    requests or ``duration_s`` seconds, each request waited for at most
    ``timeout_s``; ``token``: sent as ``Authorization: Bearer``;
    ``progress``: a progress bar on stderr."""
    url: str = ''
    images: List[str] = field(default_factory=list)
    output: str = 'labels'
    concurrency: int = 8
    requests: int = 200
    duration_s: float = 60.0
    timeout_s: float = 30.0
    token: Optional[str] = None
    progress: bool = False

    def check(self) -> 'LoadOptions':
        """Refuse, with one line saying why, what cannot be run or would
        not be bounded."""
        check_url(self.url)
        if not self.images:
            raise InputError('no images to send')
        for path in self.images:
            if not osp.isfile(path):
                raise InputError(f'image not found: {path}')
        check_choice('output', self.output, OUTPUTS)
        for name in ('concurrency', 'requests'):
            if getattr(self, name) < 1:
                raise InputError(f'--{name} must be >= 1, got '
                                 f'{getattr(self, name)}')
        for name in ('duration_s', 'timeout_s'):
            if not getattr(self, name) > 0:
                raise InputError(f'--{name.replace("_", "-")} must be > 0, '
                                 f'got {getattr(self, name)}')
        return self

    def endpoint(self) -> str:
        """The URL requests go to: ``url``, or its ``/v1/segment`` where
        it names no path."""
        parts = urlsplit(self.url)
        if parts.path in ('', '/'):
            return parts._replace(path=SEGMENT_PATH).geturl()
        return self.url


def check_url(url: str) -> None:
    """An :class:`InputError` unless ``url`` is an http(s) URL with a
    host: a typo should be one line, not 200 counted client errors."""
    parts = urlsplit(url)
    if parts.scheme not in ('http', 'https'):
        raise InputError(f'the URL {url!r} is not http:// or https://')
    if not parts.hostname:
        raise InputError(f'the URL {url!r} names no host')


def content_type(path: str) -> str:
    """The Content-Type of a file by its suffix; unknown suffixes go as
    ``application/octet-stream`` (the service sniffs those)."""
    kind, _ = mimetypes.guess_type(path)
    return kind or 'application/octet-stream'


def percentiles(values: List[float]) -> Optional[Dict[str, float]]:
    """``{p50, p95, p99, max}`` of ``values`` (linear interpolation, as
    numpy's default), rounded to 0.01; None without values."""
    if not values:
        return None
    import numpy as np
    found = np.percentile(values, PERCENTILES)
    summary = {f'p{p}': round(float(v), 2)
               for p, v in zip(PERCENTILES, found)}
    summary['max'] = round(float(max(values)), 2)
    return summary


@dataclass
class LoadReport:
    """What a run got back: requests ``sent``, the count of each status
    (``statuses``: HTTP codes, and ``'timeout'``, ``'connection'``,
    ``'client-error'`` for failures on the client's side), the wall time
    (``seconds``), which bound ended it (``stopped_by``: 'requests' or
    'duration') and the latencies in ms of the 200s and of the 503s."""
    url: str = ''
    concurrency: int = 0
    sent: int = 0
    statuses: Dict[Union[int, str], int] = field(default_factory=dict)
    seconds: float = 0.0
    stopped_by: str = 'requests'
    ok_ms: List[float] = field(default_factory=list)
    unavailable_ms: List[float] = field(default_factory=list)

    def count(self, status: Union[int, str], latency_ms: float) -> None:
        """One request's outcome."""
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status == 200:
            self.ok_ms.append(latency_ms)
        elif status == 503:
            self.unavailable_ms.append(latency_ms)

    @property
    def requests_per_s(self) -> float:
        """Successful (200) requests a second over the run."""
        return len(self.ok_ms) / self.seconds if self.seconds else 0.0

    @property
    def ok_latency_ms(self) -> Optional[Dict[str, float]]:
        """p50/p95/p99/max of the 200s (None without any)."""
        return percentiles(self.ok_ms)

    @property
    def unavailable_latency_ms(self) -> Optional[Dict[str, float]]:
        """p50/p95/p99/max of the 503s (None without any)."""
        return percentiles(self.unavailable_ms)

    def sorted_statuses(self) -> Dict[str, int]:
        """The status counts, HTTP codes first in order, then the client
        errors by name; keys as strings (JSON's keys are)."""
        codes = sorted(k for k in self.statuses if isinstance(k, int))
        names = sorted(k for k in self.statuses if isinstance(k, str))
        return {str(k): self.statuses[k] for k in codes + names}

    def as_dict(self) -> dict:
        return dict(url=self.url, concurrency=self.concurrency,
                    sent=self.sent, statuses=self.sorted_statuses(),
                    seconds=round(self.seconds, 3),
                    stopped_by=self.stopped_by,
                    requests_per_s=round(self.requests_per_s, 2),
                    latency_ms={'200': self.ok_latency_ms,
                                '503': self.unavailable_latency_ms})

    def table(self) -> str:
        """The report as a few aligned lines, for a terminal."""
        statuses = ', '.join(f'{k}: {v}'
                             for k, v in self.sorted_statuses().items())
        lines = [
            f'url          {self.url}',
            f'sent         {self.sent} at concurrency {self.concurrency} in '
            f'{self.seconds:.2f} s (stopped by {self.stopped_by})',
            f'statuses     {statuses or "-"}',
            f'200/s        {self.requests_per_s:.2f}',
        ]
        for name, summary in (('200 ms', self.ok_latency_ms),
                              ('503 ms', self.unavailable_latency_ms)):
            if summary is not None:
                lines.append(f'{name:<13}' + '  '.join(
                    f'{k} {v:.1f}' for k, v in summary.items()))
        return '\n'.join(lines)


def _failure_name(exc: BaseException) -> str:
    """The status name of a request that got no HTTP answer. aiohttp's
    read timeouts are connection errors too: time comes first."""
    import aiohttp
    if isinstance(exc, asyncio.TimeoutError):
        return TIMEOUT
    if isinstance(exc, aiohttp.ClientConnectionError):
        return CONNECTION
    return CLIENT_ERROR


class _Run:
    """One run's state: the bodies, the count of requests handed out,
    the deadline and the report the workers fill in."""

    def __init__(self, options: LoadOptions):
        self.options = options
        self.endpoint = options.endpoint()
        self.bodies = [(_read(path), content_type(path))
                       for path in options.images]
        self.handed_out = 0
        self.report = LoadReport(url=self.endpoint,
                                 concurrency=options.concurrency)
        self.deadline = 0.0
        self.bar = None

    def take(self) -> Optional[int]:
        """The index of the next request to send; None once either bound
        is reached (and which one is noted)."""
        if self.handed_out >= self.options.requests:
            return None
        if time.monotonic() >= self.deadline:
            self.report.stopped_by = 'duration'
            return None
        self.handed_out += 1
        return self.handed_out - 1

    async def worker(self, session) -> None:
        while (index := self.take()) is not None:
            self.report.sent += 1
            status, latency_ms = await self.send(session, index)
            self.report.count(status, latency_ms)
            if self.bar is not None:
                self.bar.update()

    async def send(self, session, index: int):
        """``(status, latency in ms)`` of request ``index``: the time from
        sending to its whole response read."""
        import aiohttp
        body, kind = self.bodies[index % len(self.bodies)]
        start = time.perf_counter()
        try:
            async with session.post(self.endpoint, data=body,
                                    params={'output': self.options.output},
                                    headers={'Content-Type': kind}) as resp:
                await resp.read()
                status = resp.status
        except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
            status = _failure_name(exc)
        return status, (time.perf_counter() - start) * 1000


def _read(path: str) -> bytes:
    with open(path, 'rb') as f:
        return f.read()


async def run_load_async(options: LoadOptions) -> LoadReport:
    """:func:`run_load` in a running event loop (a notebook's, a test's
    that serves a stub in the same loop)."""
    import aiohttp
    options.check()
    run = _Run(options)
    headers = {}
    if options.token:
        headers['Authorization'] = f'Bearer {options.token}'
    connector = aiohttp.TCPConnector(limit=options.concurrency)
    timeout = aiohttp.ClientTimeout(total=options.timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                     headers=headers) as session:
        if options.progress:
            from mmengine.utils import ProgressBar
            run.bar = ProgressBar(options.requests, file=sys.stderr)
        start = time.monotonic()
        run.deadline = start + options.duration_s
        workers = min(options.concurrency, options.requests)
        await asyncio.gather(*(run.worker(session) for _ in range(workers)))
        run.report.seconds = time.monotonic() - start
    if run.bar is not None:
        run.bar.file.write('\n')
    return run.report


def run_load(options: LoadOptions) -> LoadReport:
    """Send ``options.requests`` requests (or as many as ``duration_s``
    allows) of ``options.images`` to ``options.url``, ``concurrency`` at a
    time, and report what came back. Runs its own event loop."""
    return asyncio.run(run_load_async(options))


__all__ = ['LoadOptions', 'LoadReport', 'content_type', 'percentiles',
           'run_load', 'run_load_async']
