"""The service measured against ``tools/infer.py`` on the same images,
weights and engine, in one run (``tools/benchmark_serving.py``): the
stages of :class:`ServingBenchmark` -- in-process throughput and
single-image latency, then the service's throughput with and without
batching, its latency alone, overload, and a replica killed under load --
each a method a user can call, with the options in
:class:`ServingBenchmarkOptions`. Server and load generator share the
machine; the report names it."""
import os
import signal
import tempfile
import time
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional

import numpy as np
from mmengine.logging import print_log

from .load import LoadOptions, run_load
from .options import ServeOptions


@dataclass
class ServingBenchmarkOptions:
    """The model (``serve``: the service's options; its engine and
    weights are ``tools/infer.py``'s too), the images sent, and the sizes
    of the runs: ``requests`` at ``concurrency`` for throughput,
    ``latency_requests`` alone, ``overload_requests`` at
    ``overload_concurrency``, ``kill_seconds`` of load around a killed
    replica."""
    serve: ServeOptions = field(default_factory=ServeOptions)
    images: List[str] = field(default_factory=list)
    concurrency: int = 8
    requests: int = 400
    latency_requests: int = 100
    overload_concurrency: int = 64
    overload_requests: int = 2000
    kill_seconds: float = 20.0
    stages: tuple = ('infer', 'single', 'batched', 'unbatched', 'latency',
                     'overload', 'kill')


def _processes_rss_mb(pids) -> float:
    """Resident memory of these processes in MB (gone ones count 0)."""
    import psutil
    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def ray_pids() -> List[int]:
    """This process and the Ray processes it started."""
    import psutil
    me = psutil.Process(os.getpid())
    return [me.pid] + [p.pid for p in me.children(recursive=True)]


def replica_pids(app_name: str) -> List[int]:
    """The processes of application ``app_name``'s Serve replicas."""
    import psutil
    found = []
    for pid in ray_pids():
        try:
            if f'ServeReplica:{app_name}:' in ' '.join(
                    psutil.Process(pid).cmdline()):
                found.append(pid)
        except psutil.NoSuchProcess:
            pass
    return sorted(found)


class ServingBenchmark:
    """The stages (see the module docstring); :meth:`run` runs those of
    ``options.stages`` and returns the report."""

    def __init__(self, options: ServingBenchmarkOptions):
        self.options = options
        self.report: Dict[str, dict] = {}

    # in this process, as tools/infer.py runs

    def infer(self) -> dict:
        """``tools/infer.py`` over the images (label maps written, no
        overlays: what the service answers with output=labels)."""
        from ..inference import InferenceOptions, run_inference
        serve = self.options.serve
        with tempfile.TemporaryDirectory() as out, \
                tempfile.NamedTemporaryFile('w', suffix='.txt') as listing:
            # a list's relative paths are relative to the list's folder
            listing.write('\n'.join(os.path.abspath(path)
                                    for path in self.options.images))
            listing.flush()
            report = run_inference(listing.name, serve.config, serve.weights,
                                   InferenceOptions(
                                       out_dir=out, engine=serve.engine,
                                       precision=serve.precision,
                                       save_vis=False, save_pred='trainid',
                                       cfg_options=serve.cfg_options))
        return dict(images=report.done, seconds=round(report.seconds, 2),
                    images_per_s=round(report.images_per_s, 2))

    def single(self) -> dict:
        """One image at a time in this process: the prediction step and
        the label PNG's encoding (``p50_ms``, the encoding alone in
        ``encode_p50_ms``), the engine compiled as the service compiles
        it."""
        from ..inference.drawing import encode_image
        from ..inference.predictor import (SegmentationPredictor,
                                           throughput_streams)
        from ..inference.sources import read_image
        serve = self.options.serve
        predictor = SegmentationPredictor(
            serve.config, serve.weights, engine=serve.engine,
            precision=serve.precision,
            streams=throughput_streams(serve.engine, serve.streams),
            cfg_options=serve.cfg_options)
        images = [read_image(p) for p in self.options.images]
        predictor.predict(images[:1])
        times, encode = [], []
        for index in range(self.options.latency_requests):
            image = images[index % len(images)]
            start = time.perf_counter()
            labels = predictor.predict([image])[0]
            middle = time.perf_counter()
            encode_image(labels)
            times.append((time.perf_counter() - start) * 1000)
            encode.append((time.perf_counter() - middle) * 1000)
        return dict(p50_ms=round(float(np.median(times)), 2),
                    encode_p50_ms=round(float(np.median(encode)), 2))

    # the service

    def _load(self, url: str, concurrency: int, requests: int,
              duration_s: float = 600) -> dict:
        report = run_load(LoadOptions(
            url=url, images=list(self.options.images),
            concurrency=concurrency, requests=requests,
            duration_s=duration_s,
            timeout_s=self.options.serve.request_timeout_s + 10))
        return report.as_dict()

    def _warm(self, url: str) -> None:
        """One request from each client before a run is measured."""
        self._load(url, self.options.concurrency, self.options.concurrency)

    def _served(self, name: str, **fields):
        from .server import SegmentationServer
        options = replace(self.options.serve, app_name=name, **fields)
        return SegmentationServer(options)

    def batched(self) -> dict:
        """Throughput at ``concurrency`` with the service's batching."""
        with self._served('batched') as server:
            self._warm(server.url)
            return self._load(server.url, self.options.concurrency,
                              self.options.requests)

    def unbatched(self) -> dict:
        """The same with batches of one."""
        with self._served('unbatched', max_batch_size=1) as server:
            self._warm(server.url)
            return self._load(server.url, self.options.concurrency,
                              self.options.requests)

    def latency(self) -> dict:
        """Requests one at a time."""
        with self._served('latency') as server:
            self._warm(server.url)
            return self._load(server.url, 1, self.options.latency_requests)

    def overload(self) -> dict:
        """``overload_concurrency`` clients at once: every request answered
        200 or 503; the Ray processes' resident memory before and
        after."""
        with self._served('overload') as server:
            self._warm(server.url)
            before = _processes_rss_mb(ray_pids())
            report = self._load(server.url, self.options.overload_concurrency,
                                self.options.overload_requests)
            after = _processes_rss_mb(ray_pids())
        report.update(rss_before_mb=round(before, 1),
                      rss_after_mb=round(after, 1),
                      rss_growth=round(after / before - 1, 4))
        return report

    def kill(self) -> dict:
        """Two replicas under load at ``concurrency``; one replica's process
        is killed after a third of ``kill_seconds``: the statuses, and the
        seconds until Serve has two live replicas again."""
        import threading
        with self._served('killed', replicas=2) as server:
            self._warm(server.url)
            pids = replica_pids('killed')
            result = {}

            def load():
                result.update(self._load(
                    server.url, self.options.concurrency, 10**6,
                    duration_s=self.options.kill_seconds))

            thread = threading.Thread(target=load)
            thread.start()
            time.sleep(self.options.kill_seconds / 3)
            killed_at = time.perf_counter()
            os.kill(pids[0], signal.SIGKILL)
            recovered = None
            while recovered is None and time.perf_counter() - killed_at < 120:
                now = replica_pids('killed')
                if len(now) == 2 and pids[0] not in now:
                    recovered = time.perf_counter() - killed_at
                time.sleep(0.2)
            thread.join()
        result['recovery_s'] = None if recovered is None else round(
            recovered, 2)
        return result

    def run(self) -> Dict[str, dict]:
        for stage in self.options.stages:
            print_log(f'serving benchmark: {stage}', logger='current')
            self.report[stage] = getattr(self, stage)()
        self.report['ratios'] = self.ratios()
        return self.report

    def ratios(self) -> dict:
        """The goals' ratios from the stages that ran."""
        found = self.report
        ratios = {}
        if 'infer' in found and 'batched' in found:
            ratios['served_vs_infer'] = round(
                found['batched']['requests_per_s'] /
                found['infer']['images_per_s'], 3)
        if 'batched' in found and 'unbatched' in found:
            ratios['batching_on_vs_off'] = round(
                found['batched']['requests_per_s'] /
                found['unbatched']['requests_per_s'], 3)
        if 'latency' in found and 'single' in found:
            ratios['latency_p50_minus_in_process_ms'] = round(
                found['latency']['latency_ms']['200']['p50'] -
                found['single']['p50_ms'], 2)
        return ratios


def run_serving_benchmark(options: ServingBenchmarkOptions,
                          address: Optional[str] = None) -> dict:
    """:class:`ServingBenchmark` on a local Ray (or the cluster at
    ``address``), shut down after."""
    from .server import init_ray
    init_ray(address)
    import ray
    from ray import serve
    try:
        return ServingBenchmark(options).run()
    finally:
        if not address:
            serve.shutdown()
            ray.shutdown()
