"""The serving benchmark's ratios (:mod:`repvgg_seg.serving.benchmark`)
from its stages' results: known answers, and none where a stage did not
run."""
from repvgg_seg.serving.benchmark import (ServingBenchmark,
                                          ServingBenchmarkOptions)


def test_ratios_of_the_stages_that_ran():
    bench = ServingBenchmark(ServingBenchmarkOptions())
    bench.report = {
        'infer': {'images_per_s': 50.0},
        'single': {'p50_ms': 20.0, 'encode_p50_ms': 0.5},
        'batched': {'requests_per_s': 40.0},
        'unbatched': {'requests_per_s': 32.0},
        'latency': {'latency_ms': {'200': {'p50': 26.5}}}}
    assert bench.ratios() == {'served_vs_infer': 0.8,
                              'batching_on_vs_off': 1.25,
                              'latency_p50_minus_in_process_ms': 6.5}
    bench.report = {'batched': {'requests_per_s': 40.0}}
    assert bench.ratios() == {}
