"""The service on Ray Serve (:mod:`repvgg_seg.serving.deployment`,
:mod:`repvgg_seg.serving.server`): Ray on loopback only, two replicas that
both answer, a replica killed under load that comes back, a full queue
answered 503 with Retry-After, weights that fail to load refused in one
line, and the Serve config file that ``serve deploy`` takes."""
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import psutil
import pytest
import requests

from repvgg_seg.serving.benchmark import ray_pids, replica_pids

from .conftest import serve_options, serving
from .test_http import labels_of, png, post


def test_ray_listens_on_loopback_only(live_url):
    pids = set(ray_pids())
    listening = [(c.laddr.ip, c.laddr.port, c.pid)
                 for c in psutil.net_connections(kind='inet')
                 if c.status == psutil.CONN_LISTEN and c.pid in pids]
    names = {psutil.Process(pid).name() for _, _, pid in listening}
    # the GCS, a raylet, Serve's proxy: the walk found Ray's servers
    assert {'gcs_server', 'raylet'} <= names, names
    assert len(listening) >= 6
    others = [(ip, psutil.Process(pid).name()) for ip, _, pid in listening
              if ip not in ('127.0.0.1', '::1', '::ffff:127.0.0.1')]
    # one exception, Ray Serve's own: each replica's inter-deployment gRPC
    # server is bound to [::]:0 in Ray 2.60 (ray/serve/_private/replica.py,
    # no option); everything else listens on loopback
    replicas = len(replica_pids('plain'))
    assert replicas == 1
    assert others == [('::', 'ray::ServeReplica:plain:SegmentationDeployment'
                       )] * replicas
    port = int(live_url.rsplit(':', 1)[1])
    assert ('127.0.0.1', port) in {(ip, p) for ip, p, _ in listening}


def test_two_replicas_both_answer(ray_port, tiny_trained, val_images):
    image = png(val_images[0])
    with serving(ray_port, tiny_trained, 'pair', replicas=2) as url:
        expected = labels_of(post(url, image))
        pids = replica_pids('pair')
        assert len(pids) == 2
        seen = set()
        for _ in range(40):
            answer = post(url, image)
            assert np.array_equal(labels_of(answer), expected)
            seen.add(answer.headers['x-replica'])
            if len(seen) == 2:
                break
        assert len(seen) == 2


def test_a_killed_replica_comes_back(ray_port, tiny_trained, val_images):
    """Under load, one replica's process is killed: the requests it held
    end with a 5xx within their time limit (none hangs), the others keep
    being answered, and Serve starts a new replica without a restart of
    the service."""
    image = png(val_images[0])
    with serving(ray_port, tiny_trained, 'killed', replicas=2,
                 request_timeout_s=10) as url:
        expected = labels_of(post(url, image))
        before = replica_pids('killed')
        assert len(before) == 2
        stop = time.monotonic() + 6

        def client(_):
            answers = []
            while time.monotonic() < stop:
                start = time.monotonic()
                try:
                    answer = post(url, image)
                    answers.append((answer.status_code,
                                    time.monotonic() - start, answer))
                except requests.ConnectionError:
                    answers.append(('connection', time.monotonic() - start,
                                    None))
            return answers

        with ThreadPoolExecutor(4) as pool:
            running = [pool.submit(client, i) for i in range(4)]
            time.sleep(1.5)
            os.kill(before[0], signal.SIGKILL)
            answers = [a for future in running for a in future.result()]
        statuses = [status for status, _, _ in answers]
        assert statuses.count(200) > 10
        assert set(statuses) <= {200, 500, 502, 503, 'connection'}, statuses
        # none waited past the request limit (plus the proxy's margin)
        assert max(seconds for _, seconds, _ in answers) < 15
        for status, _, answer in answers:
            if status == 200:
                assert np.array_equal(labels_of(answer), expected)
        # the replica is back: two live replicas again, both new or kept
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            after = replica_pids('killed')
            if len(after) == 2 and before[0] not in after:
                break
            time.sleep(0.5)
        assert len(after) == 2 and before[0] not in after
        assert np.array_equal(labels_of(post(url, image)), expected)


def test_a_full_queue_answers_503_with_retry_after(ray_port, tiny_trained,
                                                   val_images):
    """One request held by the replica, one queued: the others are refused
    at once, each with Retry-After, and the held ones are answered."""
    image = png(val_images[0])
    with serving(ray_port, tiny_trained, 'busy', max_ongoing=1,
                 max_queued=1, max_batch_size=4, batch_wait_ms=1500) as url:
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda _: (time.monotonic(), post(
                url, image)), range(6)))
        statuses = sorted(answer.status_code for _, answer in answers)
        assert statuses.count(200) >= 1 and statuses.count(503) >= 3
        assert set(statuses) == {200, 503}
        for _, answer in answers:
            if answer.status_code == 503:
                assert answer.headers['retry-after'] == '1'
        # the service serves the next request
        assert post(url, image).status_code == 200


def test_weights_that_fail_to_load_stop_the_start_in_one_line(
        ray_port, tiny_trained, tmp_path):
    from ray import serve

    from repvgg_seg.serving.server import SegmentationServer, ServeError
    broken = tmp_path / 'broken.pth'
    broken.write_bytes(b'not a checkpoint')
    options = serve_options(tiny_trained, app_name='broken',
                            route_prefix='/broken', port=ray_port)
    options.weights = str(broken)
    with pytest.raises(ServeError) as info:
        SegmentationServer(options).start()
    message = str(info.value)
    assert message.startswith('the service did not start: '
                              'UnsafeCheckpointError: refused to load ')
    assert '\n' not in message
    assert 'broken.pth' in message
    # nothing half-started is left: the application is gone
    assert 'broken' not in serve.status().applications


def test_the_serve_config_file_builds_the_same_application(tiny_trained,
                                                            tmp_path):
    import yaml

    from repvgg_seg.serving.deployment import build_app
    from repvgg_seg.serving.server import write_serve_config
    out = tmp_path / 'serve.yaml'
    options = serve_options(tiny_trained, replicas='auto', max_replicas=3,
                            host='0.0.0.0', insecure=True, port=9000)
    write_serve_config(options, str(out))
    config = yaml.safe_load(out.read_text())
    assert config['http_options'] == dict(host='0.0.0.0', port=9000,
                                          request_timeout_s=35.0)
    (app, ) = config['applications']
    assert app['import_path'] == 'repvgg_seg.serving.deployment:build_app'
    assert app['args']['replicas'] == 'auto'
    assert app['args']['weights'] == tiny_trained['checkpoint']
    # the file's arguments give the same options, and an application
    from ray.serve import Application

    from repvgg_seg.serving import ServeOptions
    from repvgg_seg.serving.deployment import deployment_settings
    again = ServeOptions.from_dict(app['args'])
    assert again.replicas == 'auto' and again.max_replicas == 3
    settings = deployment_settings(again)
    assert settings['autoscaling_config']['max_replicas'] == 3
    assert settings['max_queued_requests'] == 32
    assert isinstance(build_app(app['args']), Application)
    # serve run's key=value arguments arrive as strings
    strings = {k: str(v) for k, v in app['args'].items()
               if k != 'cfg_options'}
    parsed = ServeOptions.from_dict(strings)
    assert (parsed.max_replicas, parsed.replicas, parsed.threads,
            parsed.insecure, parsed.opacity) == (3, 'auto', None, True, 0.5)
    assert ServeOptions.from_dict(dict(strings, replicas='2')).replicas == 2
    with pytest.raises(Exception) as info:
        ServeOptions.from_dict(dict(app['args'], replica=2))
    assert str(info.value).startswith("unknown serve option 'replica'")


def test_serve_run_deploys_the_written_config_file(ray_port, tiny_trained,
                                                   live_url, val_images,
                                                   tmp_path):
    """Ray's own command on the file ``--write-config`` writes: ``serve run
    --address <this Ray> --non-blocking serve.yaml`` deploys the
    application, which answers the labels the plain application does."""
    import subprocess
    import sys

    import ray
    from ray import serve

    from repvgg_seg.serving.server import write_serve_config
    out = tmp_path / 'serve.yaml'
    write_serve_config(serve_options(
        tiny_trained, app_name='fromfile', route_prefix='/fromfile',
        port=ray_port), str(out))
    command = [os.path.join(os.path.dirname(sys.executable), 'serve'), 'run',
               '--address', ray.get_runtime_context().gcs_address,
               '--non-blocking', str(out)]
    try:
        ran = subprocess.run(command, capture_output=True, text=True,
                             timeout=120)
        assert ran.returncode == 0, ran.stderr[-2000:]
        deadline = time.monotonic() + 120
        while (status := serve.status().applications['fromfile']
               ).status != 'RUNNING':
            assert status.status != 'DEPLOY_FAILED', status.message
            assert time.monotonic() < deadline, status
            time.sleep(0.5)
        url = f'http://127.0.0.1:{ray_port}/fromfile'
        image = png(val_images[0])
        assert np.array_equal(labels_of(post(url, image)),
                              labels_of(post(live_url, image)))
    finally:
        serve.delete('fromfile')


@pytest.mark.parametrize('key, value, why', [
    ('max_batch_size', 'x', 'max_batch_size: Input should be a valid '
     "integer, unable to parse string as an integer, got 'x'"),
    ('replicas', 'many', 'replicas: Input should be a valid integer, '
     "unable to parse string as an integer or Input should be 'auto', got "
     "'many'"),
    ('insecure', 'perhaps', 'insecure: Input should be a valid boolean, '
     "unable to interpret input, got 'perhaps'"),
])
def test_a_serve_option_of_the_wrong_type_is_refused_in_one_line(
        key, value, why):
    from repvgg_seg.errors import InputError
    from repvgg_seg.serving import ServeOptions
    with pytest.raises(InputError) as info:
        ServeOptions.from_dict({key: value})
    assert str(info.value) == f'serve option {why}'


def test_request_logs_carry_no_image_data(live_url, val_images):
    """Serve's access logs name the request, never its bytes: after an
    upload, no log of the session holds the image, raw or in base64."""
    import base64
    import glob
    import uuid
    data = png(val_images[0])
    marker = f'no-bytes-{uuid.uuid4().hex}'
    answer = post(live_url, data, headers={'X-Request-ID': marker})
    assert answer.status_code == 200
    # every Ray session's Serve logs (session_latest may be another
    # Ray's), read until the request's line is written
    deadline = time.monotonic() + 15
    while True:
        text = b''.join(open(path, 'rb').read() for path in glob.glob(
            '/tmp/ray/session_*/logs/serve/*.log'))
        if marker.encode() in text or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert marker.encode() in text  # the request was logged
    assert data[8:64] not in text
    assert base64.b64encode(data[:48])[:40] not in text
