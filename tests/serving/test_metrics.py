"""The service's Prometheus metrics, read where Prometheus reads them: Ray's
metrics port on 127.0.0.1 (the package's Ray exports every second)."""
import time

import requests
from prometheus_client.parser import text_string_to_metric_families

from .conftest import METRICS, serving
from .test_http import png, post


def samples(app: str) -> dict:
    """``{(sample name, tags that are not Ray's): value}`` of the
    ``repvgg_seg`` metrics of application ``app``."""
    text = requests.get(METRICS['url'], timeout=10).text
    values = {}
    for family in text_string_to_metric_families(text):
        if not family.name.startswith('ray_repvgg_seg_'):
            continue
        for sample in family.samples:
            if sample.labels.get('application') != app:
                continue
            tags = tuple(sorted((k, v) for k, v in sample.labels.items()
                                if k in ('stage', 'status', 'le')))
            values[sample.name, tags] = sample.value
    return values


def exported(app: str, expected_keys, wait_s: float = 30) -> dict:
    """:func:`samples` of ``app`` once every one of ``expected_keys`` has
    been exported (Ray exports a replica's metrics periodically)."""
    deadline = time.monotonic() + wait_s
    while True:
        values = samples(app)
        if all(key in values for key in expected_keys) or \
                time.monotonic() > deadline:
            return values
        time.sleep(0.5)


def test_metrics_count_engine_calls_stages_and_refusals(
        ray_port, tiny_trained, val_images):
    """On an application of its own: one answered request and two refused
    ones (415, 413) give exactly their metrics: one engine call of one
    request, each stage observed once, one refusal of each status."""
    with serving(ray_port, tiny_trained, 'metered',
                 max_body_bytes=60000) as url:
        assert post(url, png(val_images[0])).status_code == 200
        assert post(url, b'text', 'text/plain').status_code == 415
        assert post(url, b'\x00' * 70000).status_code == 413
        refused = 'ray_repvgg_seg_refused_requests_total'
        values = exported('metered', [
            (refused, (('status', '413'), )),
            (refused, (('status', '415'), )),
            ('ray_repvgg_seg_engine_call_requests_count', ()),
            ('ray_repvgg_seg_stage_ms_count', (('stage', 'total'), ))])
    assert values[refused, (('status', '415'), )] == 1
    assert values[refused, (('status', '413'), )] == 1
    assert {key for key in values if key[0] == refused} == {
        (refused, (('status', '413'), )), (refused, (('status', '415'), ))}
    assert values['ray_repvgg_seg_engine_call_requests_count', ()] == 1
    # one request a call: the first bucket (Ray's exported sums are
    # estimated from the buckets, so they are not compared)
    assert values['ray_repvgg_seg_engine_call_requests_bucket',
                  (('le', '1.0'), )] == 1
    stages = {tags[0][1]: value for (name, tags), value in values.items()
              if name == 'ray_repvgg_seg_stage_ms_count'}
    assert stages == dict(read=1, decode=1, queue=1, inference=1, encode=1,
                          total=1)
