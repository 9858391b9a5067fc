"""The HTTP API (:mod:`repvgg_seg.serving.http`) over the tiny trained
model, served on Ray Serve: the labels equal
``tools/infer.py``'s, concurrent requests share engine calls, every bad
request gets its status and one line and the next one succeeds, and a
token guards everything but health and the page."""
import contextlib
import os.path as osp
import time
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
import requests

from .conftest import TOKEN, serving


def png(path) -> bytes:
    with open(path, 'rb') as f:
        return f.read()


def post(url, data, content_type='image/png', output='labels',
         headers=None):
    return requests.post(f'{url}/v1/segment', params=dict(output=output),
                         data=data, timeout=60, headers={
                             'Content-Type': content_type, **(headers or {})})


def labels_of(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    assert response.headers['content-type'] == 'image/png'
    return cv2.imdecode(np.frombuffer(response.content, np.uint8),
                        cv2.IMREAD_UNCHANGED)


def infer_tool_labels(tiny_trained, image, engine, tmp_path) -> np.ndarray:
    """What ``tools/infer.py --save-pred trainid`` writes for ``image``."""
    from repvgg_seg.inference import InferenceOptions, run_inference
    out = tmp_path / f'infer_{engine}'
    run_inference(image, tiny_trained['config'], tiny_trained['checkpoint'],
                  InferenceOptions(out_dir=str(out), engine=engine,
                                   save_vis=False, save_pred='trainid',
                                   cfg_options=tiny_trained['options']))
    stem = osp.splitext(osp.basename(image))[0]
    return cv2.imread(str(out / 'pred' / f'{stem}.png'),
                      cv2.IMREAD_UNCHANGED)


@pytest.mark.parametrize('engine', ['torch', 'fused', 'winograd',
                                    'onnxruntime', 'openvino'])
def test_labels_equal_the_infer_tools(engine, ray_port, live_url,
                                      tiny_trained, val_images, tmp_path):
    pytest.importorskip({'onnxruntime': 'onnxruntime',
                         'openvino': 'openvino'}.get(engine, 'torch'))
    # the plain application runs the torch engine already
    with (contextlib.nullcontext(live_url) if engine == 'torch' else
          serving(ray_port, tiny_trained, engine, engine=engine)) as url:
        for image in val_images:
            served = labels_of(post(url, png(image)))
            expected = infer_tool_labels(tiny_trained, image, engine,
                                         tmp_path)
            assert served.dtype == np.uint8
            assert np.array_equal(served, expected)
        # multipart, as a browser or curl -F sends it
        with open(val_images[0], 'rb') as f:
            form = requests.post(f'{url}/v1/segment', timeout=60,
                                 files={'file': ('a.png', f, 'image/png')})
        assert np.array_equal(labels_of(form), infer_tool_labels(
            tiny_trained, val_images[0], engine, tmp_path))


def test_outputs_agree_with_the_labels(live_url, val_images):
    data = png(val_images[0])
    labels = labels_of(post(live_url, data))
    info = requests.get(f'{live_url}/v1/model', timeout=10).json()
    palette = np.array(info['palette'], np.uint8)

    answer = post(live_url, data, output='json')
    assert answer.status_code == 200
    body = answer.json()
    assert (body['height'], body['width']) == labels.shape
    counts = np.bincount(labels.ravel(), minlength=256)
    assert [c['id'] for c in body['classes']] == \
        np.flatnonzero(counts[:19]).tolist()
    for entry in body['classes']:
        assert entry['pixels'] == counts[entry['id']]
        assert entry['fraction'] == counts[entry['id']] / labels.size
        assert entry['name'] == info['classes'][entry['id']]
        assert entry['color'] == info['palette'][entry['id']]
    assert set(body['timings_ms']) == {'read', 'decode', 'queue',
                                       'inference', 'encode', 'total'}

    colour = post(live_url, data, output='color')
    assert colour.headers['content-type'] == 'image/png'
    drawn = cv2.imdecode(np.frombuffer(colour.content, np.uint8),
                         cv2.IMREAD_COLOR)
    assert np.array_equal(drawn[..., ::-1], palette[labels])

    overlay = post(live_url, data, output='overlay')
    assert overlay.headers['content-type'] == 'image/jpeg'
    assert cv2.imdecode(np.frombuffer(overlay.content, np.uint8),
                        cv2.IMREAD_COLOR).shape == labels.shape + (3, )
    timing = dict(part.split(';dur=') for part in
                  overlay.headers['server-timing'].split(', '))
    assert float(timing['total']) >= float(timing['inference']) > 0


def test_model_and_health(live_url):
    info = requests.get(f'{live_url}/v1/model', timeout=10).json()
    assert len(info['classes']) == len(info['palette']) == 19
    assert info['classes'][0] == 'road'
    assert (info['engine'], info['precision'], info['mode']) == \
        ('torch', 'fp32', 'whole')
    assert info['outputs'] == ['labels', 'color', 'overlay', 'json']
    assert info['config'] == 'pspnet_repvgg_a0_synthetic.py'
    assert requests.get(f'{live_url}/healthz', timeout=10).json() == {
        'status': 'ok'}
    assert requests.get(f'{live_url}/readyz', timeout=10).json() == {
        'status': 'ready'}
    schema = requests.get(f'{live_url}/openapi.json', timeout=10).json()
    body = schema['paths']['/v1/segment']['post']['requestBody']
    assert {'multipart/form-data', 'image/png'} <= set(body['content'])


def test_concurrent_requests_share_engine_calls(live_url, val_images):
    """Eight requests at once (batches of up to 4 within 50 ms): fewer
    engine calls than requests, each answer its own image's labels."""
    images = [png(p) for p in val_images]
    flipped = [cv2.imencode('.png', cv2.imread(p)[:, ::-1])[1].tobytes()
               for p in val_images]
    distinct = images + flipped
    alone = [labels_of(post(live_url, d)) for d in distinct]
    assert not np.array_equal(alone[0], alone[2])  # the flip differs
    requests_sent = distinct * 2
    with ThreadPoolExecutor(len(requests_sent)) as pool:
        answers = list(pool.map(lambda d: post(live_url, d), requests_sent))
    # each answer says how many requests its engine call held
    sizes = [int(a.headers['x-batch-size']) for a in answers]
    calls = sum(1 / s for s in sizes)
    assert calls < len(requests_sent)
    assert max(sizes) > 1
    for answer, expected in zip(answers, alone * 2):
        assert np.array_equal(labels_of(answer), expected)


BAD_REQUESTS = [
    # (what is sent, content type, status, reason starts with)
    (b'', 'image/png', 400, 'the image is empty (0 bytes)'),
    (b'\x89PNG\r\n\x1a\n' + b'\x00' * 40, 'image/png', 400,
     'the body is not an image of an accepted type'),
    (b'some text', 'text/plain', 415, 'Content-Type text/plain is not '
     'served'),
    ('truncated', 'image/png', 400, 'the image is truncated'),
    ('huge body', 'image/png', 413, 'the body has 70000 bytes; the limit '
     'is 60000'),
    ('bomb', 'image/png', 413, 'the image has 100000x100000 = 10000000000 '
     'pixels; the limit is 100000'),
    ('no file part', 'multipart/form-data', 400, 'the multipart body has no '
     'file part named "file"'),
    ('no boundary', 'multipart/form-data', 400, 'the multipart body cannot '
     'be parsed: Missing boundary in multipart.'),
]


def test_bad_requests_get_their_status_and_the_next_one_succeeds(
        live_url, val_images):
    from .test_uploads import png_claiming
    good = png(val_images[0])
    bodies = {'truncated': good[:len(good) // 2], 'huge body': b'\x00' *
              70000, 'bomb': png_claiming(100_000, 100_000)}
    url = live_url
    expected = labels_of(post(url, good))
    for body, kind, status, reason in BAD_REQUESTS:
        if body == 'no file part':
            answer = requests.post(f'{url}/v1/segment', timeout=10,
                                   files={'image': ('a.png', good)})
        else:
            answer = post(url, bodies.get(body, body), kind)
        assert answer.status_code == status, (body, answer.text)
        detail = answer.json()['detail']
        assert detail.startswith(reason), detail
        assert '\n' not in detail
        assert np.array_equal(labels_of(post(url, good)), expected)
    unknown = post(url, good, output='mask')
    assert unknown.status_code == 422
    assert unknown.json() == {'detail': "output: unknown 'mask'; valid: "
                              'labels, color, overlay, json'}
    # a body sent in chunks, without a Content-Length, is cut off too
    chunked = post(url, iter([b'\x00' * 40000] * 2))
    assert chunked.status_code == 413
    assert chunked.json()['detail'] == ('the body is over the limit of '
                                        '60000 bytes')
    assert np.array_equal(labels_of(post(url, good)), expected)


def test_a_request_over_its_time_limit_gets_504(ray_port, tiny_trained,
                                                val_images):
    """A lone request waits 4 s for its batch to fill, over its 1.5 s; two
    at once fill the batch and are answered well within it (about 0.3 s on
    two busy cores: 1.5 s leaves a slow machine room)."""
    good = png(val_images[0])
    with serving(ray_port, tiny_trained, 'slow', max_batch_size=2,
                 batch_wait_ms=4000, request_timeout_s=1.5) as url:
        late = post(url, good)
        assert late.status_code == 504
        assert late.json() == {'detail': 'the request took longer than its '
                               'limit of 1.5 s'}
        # the late request's batch ends after its wait; then two at once
        time.sleep(3.0)
        with ThreadPoolExecutor(2) as pool:
            pair = list(pool.map(lambda _: post(url, good), range(2)))
        assert [a.status_code for a in pair] == [200, 200]


def test_a_token_guards_all_but_health_and_the_page(guarded_url,
                                                    val_images):
    good = png(val_images[0])
    url = guarded_url
    for path in ('/v1/model', '/openapi.json', '/docs'):
        answer = requests.get(url + path, timeout=10)
        assert answer.status_code == 401, path
        assert answer.headers['www-authenticate'] == 'Bearer'
        assert answer.json() == {'detail': 'a bearer token is required '
                                 '(Authorization: Bearer <token>)'}
    assert post(url, good).status_code == 401
    wrong = {'Authorization': f'Bearer {TOKEN}-not'}
    assert requests.get(url + '/v1/model', headers=wrong,
                        timeout=10).status_code == 401
    right = {'Authorization': f'Bearer {TOKEN}'}
    assert post(url, good, headers=right).status_code == 200
    for path in ('/v1/model', '/openapi.json', '/docs'):
        assert requests.get(url + path, headers=right,
                            timeout=10).status_code == 200, path
    # the docs page loads the schema under the application's prefix
    docs = requests.get(url + '/docs', headers=right, timeout=10).text
    assert "'/guarded/openapi.json'" in docs
    for path in ('/healthz', '/readyz', '/'):
        assert requests.get(url + path, timeout=10).status_code == 200


def test_an_int8_ir_is_served_with_its_int8_convs(ray_port, tiny_trained,
                                                  synthetic_root, val_images,
                                                  tmp_path, capsys):
    """tools/quantize.py's INT8 IR on the openvino engine: the labels are
    tools/infer.py's, and /v1/model counts the convs that ran in INT8."""
    pytest.importorskip('nncf')
    from tests.helpers import run_tool
    ir = str(tmp_path / 'int8.xml')
    # calibrated and checked on the synthetic train and val splits
    options = dict(tiny_trained['options'], **{
        f'{split}_dataloader.dataset.data_root': synthetic_root
        for split in ('train', 'val')})
    code, err = run_tool(
        'quantize', tiny_trained['config'], tiny_trained['checkpoint'], ir,
        '--calib-images', '2', '--heldout-images', '1', '--min-agreement',
        '0', '--cfg-options', *[f'{k}={v}' for k, v in options.items()],
        capsys=capsys)
    assert code == 0, err
    tool = dict(tiny_trained, checkpoint=ir)
    with serving(ray_port, tool, 'int8', engine='openvino',
                 precision='int8') as url:
        info = requests.get(f'{url}/v1/model', timeout=10).json()
        assert info['convs'] > 10
        assert info['int8_convs'] == info['convs']
        assert info['input_shape'][2:] == info['image_size'] == [256, 512]
        for image in val_images:
            expected = infer_tool_labels(tool, image, 'openvino', tmp_path)
            assert np.array_equal(labels_of(post(url, png(image))),
                                  expected)
