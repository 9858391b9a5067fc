"""The service's own Prometheus metrics, beside Ray Serve's (requests,
statuses and latencies per route, queue lengths, replica health): how many
requests each engine call held (the batching at work), the time of each
stage of a request (as its ``Server-Timing``) and the requests the
application refused, by status. Ray exports them, prefixed ``ray_`` and
tagged with the application, deployment and replica, on its metrics port
(``tools/serve.py --metrics-port``; on a cluster, ``ray start
--metrics-export-port``)."""
from typing import Dict

from ray.serve import metrics

#: histogram buckets of a stage's milliseconds
STAGE_MS_BUCKETS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000,
                    10000, 30000]
#: histogram buckets of the requests an engine call held
ENGINE_CALL_BUCKETS = [1, 2, 3, 4, 6, 8, 12, 16, 32, 64]


class ServiceMetrics:
    """The metrics of one replica (see the module docstring)."""

    def __init__(self):
        self.stage_ms = metrics.Histogram(
            'repvgg_seg_stage_ms', description='Milliseconds of a stage of '
            'POST /v1/segment (read, decode, queue, inference, encode, '
            'total)', boundaries=STAGE_MS_BUCKETS, tag_keys=('stage', ))
        self.engine_call_requests = metrics.Histogram(
            'repvgg_seg_engine_call_requests', description='Requests one '
            'engine call held (images of one shape in a batch)',
            boundaries=ENGINE_CALL_BUCKETS)
        self.refused = metrics.Counter(
            'repvgg_seg_refused_requests', description='Requests the '
            'application refused, by HTTP status', tag_keys=('status', ))

    def stages(self, timings_ms: Dict[str, float]) -> None:
        """One answered request's stages (its ``Server-Timing``)."""
        for stage, ms in timings_ms.items():
            self.stage_ms.observe(ms, tags={'stage': stage})

    def engine_call(self, requests: int) -> None:
        self.engine_call_requests.observe(requests)

    def refusal(self, status: int) -> None:
        self.refused.inc(tags={'status': str(status)})
