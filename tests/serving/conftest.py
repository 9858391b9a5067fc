"""The tiny trained model served on Ray Serve, as users run it: one local
Ray on 127.0.0.1 for the whole package (started once, about 1 GB, shut
down when the package's tests end so that no Ray thread outlives them),
and applications deployed on it with :class:`SegmentationServer`
(``serving``; ``live_url``: the plain one at ``/``, shared by the HTTP,
browser and load tests)."""
import contextlib
import glob
import os.path as osp

import pytest

from repvgg_seg.serving.server import keep_ray_on_loopback

keep_ray_on_loopback()  # before ray is imported
pytest.importorskip('ray.serve')
pytest.importorskip('fastapi')


def serve_options(tiny_trained, **fields):
    """:class:`ServeOptions` of the tiny trained model; a replica takes a
    tenth of a CPU, so that several fit Ray's two."""
    from repvgg_seg.serving import ServeOptions
    fields.setdefault('cpus_per_replica', 0.1)
    return ServeOptions(config=tiny_trained['config'],
                        weights=tiny_trained['checkpoint'],
                        cfg_options=tiny_trained['options'], **fields)


#: Ray's Prometheus port in this package (set by ``ray_port``)
METRICS = {}


@pytest.fixture(scope='package')
def ray_port():
    """Ray and Serve's HTTP proxy on 127.0.0.1: the proxy's port; Ray's
    metrics at ``METRICS['url']``, exported every second (Ray's default
    is ten)."""
    import os

    import ray
    from ray import serve

    from repvgg_seg.serving.server import init_ray
    from tests.helpers import free_port
    port, metrics_port = free_port(), free_port()
    os.environ['RAY_metrics_report_interval_ms'] = '1000'
    init_ray(None, num_cpus=2, metrics_port=metrics_port)
    METRICS['url'] = f'http://127.0.0.1:{metrics_port}/metrics'
    serve.start(http_options=dict(host='127.0.0.1', port=port))
    yield port
    serve.shutdown()
    ray.shutdown()
    os.environ.pop('RAY_metrics_report_interval_ms')


@contextlib.contextmanager
def serving(port, tiny_trained, name, token_file=None, **fields):
    """The tiny model's application ``name`` at ``/name`` with ``fields`` of
    :class:`ServeOptions`, deployed on the package's Ray and removed
    after; yields its URL."""
    from repvgg_seg.serving.server import SegmentationServer
    route = '/' if name == 'plain' else f'/{name}'
    server = SegmentationServer(serve_options(
        tiny_trained, app_name=name, route_prefix=route, port=port,
        token_file=token_file, **fields))
    with server:
        yield server.url


@pytest.fixture(scope='package')
def live_url(ray_port, tiny_trained):
    """The URL of the tiny model's plain application (torch, no token,
    batches of up to 4 within 50 ms, small limits: 60,000 bytes, 100,000
    pixels)."""
    with serving(ray_port, tiny_trained, 'plain', max_batch_size=4,
                 batch_wait_ms=50, max_body_bytes=60000,
                 max_pixels=100_000) as url:
        yield url


#: the token of the guarded application
TOKEN = 's3cret'


@pytest.fixture(scope='package')
def guarded_url(ray_port, tiny_trained, tmp_path_factory):
    """The URL of the tiny model's application behind the token
    :data:`TOKEN`, at ``/guarded``."""
    token_file = tmp_path_factory.mktemp('token') / 'token'
    token_file.write_text(TOKEN + '\n')
    with serving(ray_port, tiny_trained, 'guarded',
                 token_file=str(token_file)) as url:
        yield url


@pytest.fixture(scope='package')
def val_images(synthetic_root):
    """The synthetic val images (64x128 PNGs)."""
    return sorted(glob.glob(osp.join(synthetic_root, 'leftImg8bit', 'val',
                                     '*', '*.png')))
