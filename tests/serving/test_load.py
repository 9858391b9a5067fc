"""The load generator (:mod:`repvgg_seg.serving.load`, tools/load_test.py):
counts and percentiles against the tiny model's live app, and its bounds,
headers and error counting against aiohttp stub servers run in the test's
own event loop (no assertion on how fast anything is)."""
import asyncio
import glob
import json
import os.path as osp
from contextlib import asynccontextmanager

import pytest

from repvgg_seg.errors import InputError
from repvgg_seg.serving.load import LoadOptions, run_load, run_load_async
from tests.helpers import error_line, free_port, run_tool

pytest.importorskip('aiohttp')


@pytest.fixture(scope='module')
def val_images(synthetic_root):
    """The synthetic set's 2 validation images."""
    return sorted(glob.glob(osp.join(synthetic_root, 'leftImg8bit', 'val',
                                     '**', '*.png'), recursive=True))


@asynccontextmanager
async def stub_server(routes):
    """An aiohttp app with ``routes`` (``{path: handler}``, POST) on a free
    port of 127.0.0.1; yields its base URL."""
    from aiohttp import web
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_post(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, '127.0.0.1', 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f'http://127.0.0.1:{port}'
    finally:
        await runner.cleanup()


def load_against_stub(routes, path, **options):
    """The report of a run against ``path`` of a stub server."""
    async def scenario():
        async with stub_server(routes) as url:
            return await run_load_async(LoadOptions(url=url + path,
                                                    **options))
    return asyncio.run(scenario())


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / 'notes.txt'
    path.write_text('not an image')
    return str(path)


def test_live_service_all_answered(live_url, val_images):
    report = run_load(LoadOptions(url=live_url, images=val_images,
                                  concurrency=3, requests=12))
    assert report.sent == 12
    assert report.statuses == {200: 12}
    assert report.stopped_by == 'requests'
    assert report.url == live_url + '/v1/segment'
    latency = report.ok_latency_ms
    assert 0 < latency['p50'] <= latency['p95'] <= latency['p99'] \
        <= latency['max']
    assert report.requests_per_s > 0
    assert report.unavailable_latency_ms is None
    summary = json.loads(json.dumps(report.as_dict()))
    assert summary['statuses'] == {'200': 12}
    assert summary['latency_ms']['200'] == latency
    assert summary['latency_ms']['503'] is None


def test_live_service_refusals_are_counted(live_url, text_file):
    report = run_load(LoadOptions(url=live_url, images=[text_file],
                                  concurrency=2, requests=4))
    assert report.statuses == {415: 4}
    assert report.ok_latency_ms is None and report.requests_per_s == 0


def test_unavailable_counted_with_their_own_latency(text_file):
    """Every second request is shed (503 with Retry-After): both kinds are
    counted, and the 503s' latencies are reported apart."""
    from aiohttp import web
    answered = []

    async def half_busy(request):
        answered.append(request)
        if len(answered) % 2 == 0:
            return web.Response(status=503, headers={'Retry-After': '1'})
        return web.Response(body=b'png')

    report = load_against_stub({'/v1/segment': half_busy}, '',
                               images=[text_file], concurrency=1,
                               requests=6)
    assert report.statuses == {200: 3, 503: 3}
    assert len(report.ok_ms) == len(report.unavailable_ms) == 3
    shed = report.unavailable_latency_ms
    assert 0 < shed['p50'] <= shed['p99'] <= shed['max']
    assert report.as_dict()['latency_ms']['503'] == shed


def test_duration_stops_sending_and_waits_for_those_in_flight(text_file):
    from aiohttp import web

    async def slow(request):
        await asyncio.sleep(0.1)
        return web.Response(body=b'png')

    report = load_against_stub({'/slow': slow}, '/slow', images=[text_file],
                               concurrency=2, requests=1000, duration_s=0.3)
    assert 0 < report.sent < 1000
    assert report.stopped_by == 'duration'
    assert report.statuses == {200: report.sent}  # none cut off


def test_timeouts_are_counted(text_file):
    from aiohttp import web
    released = asyncio.Event()

    async def hang(request):
        await released.wait()
        return web.Response(body=b'late')

    async def scenario():
        async with stub_server({'/hang': hang}) as url:
            try:
                return await run_load_async(LoadOptions(
                    url=url + '/hang', images=[text_file], concurrency=2,
                    requests=2, timeout_s=0.1))
            finally:
                released.set()  # lets the stub shut down at once

    report = asyncio.run(scenario())
    assert report.statuses == {'timeout': 2}
    assert report.as_dict()['statuses'] == {'timeout': 2}


def test_refused_connections_are_counted(val_images):
    report = run_load(LoadOptions(url=f'http://127.0.0.1:{free_port()}',
                                  images=val_images, concurrency=2,
                                  requests=4))
    assert report.sent == 4
    assert report.statuses == {'connection': 4}


def test_token_output_and_content_type_are_sent(val_images, text_file):
    from aiohttp import web
    seen = []

    async def record(request):
        seen.append((request.headers.get('Authorization'),
                     request.query.get('output'), request.content_type,
                     len(await request.read())))
        return web.Response(body=b'{}')

    report = load_against_stub({'/v1/segment': record}, '/',
                               images=[val_images[0], text_file],
                               output='json', token='s3cret',
                               concurrency=1, requests=2)
    assert report.statuses == {200: 2}
    assert seen == [('Bearer s3cret', 'json', 'image/png',
                     osp.getsize(val_images[0])),
                    ('Bearer s3cret', 'json', 'text/plain',
                     osp.getsize(text_file))]


@pytest.mark.parametrize('change, message', [
    (dict(url='ftp://127.0.0.1/'), 'not http'),
    (dict(url='http:///v1/segment'), 'no host'),
    (dict(images=[]), 'no images'),
    (dict(requests=0), '--requests must be >= 1'),
    (dict(concurrency=0), '--concurrency must be >= 1'),
    (dict(duration_s=0), '--duration-s must be > 0'),
    (dict(output='mask'), 'output'),
])
def test_options_refused(val_images, change, message):
    options = dict(url='http://127.0.0.1:8000', images=val_images)
    with pytest.raises(InputError, match=message):
        LoadOptions(**{**options, **change}).check()


def test_tool_reports_json(live_url, synthetic_root, tmp_path, capsys):
    out = tmp_path / 'report.json'
    folder = osp.join(synthetic_root, 'leftImg8bit', 'val')
    code, _ = run_tool('load_test', live_url, folder, '--requests', '4',
                       '--concurrency', '2', '--out-json', str(out),
                       capsys=capsys)
    assert code == 0
    report = json.loads(out.read_text())
    assert report['sent'] == 4 and report['statuses'] == {'200': 4}


def test_tool_exits_1_without_a_200(val_images, capsys):
    code, err = run_tool('load_test', f'http://127.0.0.1:{free_port()}',
                         val_images[0], '--requests', '2', '--no-progress',
                         capsys=capsys)
    assert code == 1
    assert 'no request was answered with 200' in err


def test_tool_error_no_images(tmp_path, capsys):
    code, err = run_tool('load_test', 'http://127.0.0.1:8000',
                         str(tmp_path), capsys=capsys)
    assert code == 2
    assert 'no images' in error_line(err)


def test_tool_error_bad_scheme(val_images, capsys):
    code, err = run_tool('load_test', 'ftp://127.0.0.1:8000',
                         val_images[0], capsys=capsys)
    assert code == 2
    assert 'not http:// or https://' in error_line(err)
