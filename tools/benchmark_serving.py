"""Measure the HTTP service against tools/infer.py on the same images,
weights and engine (docs/benchmarks.md, "Serving").

    python tools/benchmark_serving.py CONFIG WEIGHTS IMAGES
        [--engine openvino] [--precision int8] [--concurrency 8]
        [--requests 400] [--stages infer single batched ...]
        [--out-json report.json]

IMAGES: a folder or a list of image files. Stages: infer (tools/infer.py's
images/s), single (one image at a time in this process, with the PNG
encode), batched and unbatched (the service's requests/s at --concurrency),
latency (the service at concurrency 1), overload (--overload-concurrency
clients), kill (a replica killed under load: statuses and recovery time).
The service and the load generator run on this machine, on a local Ray.
"""
import argparse
import json
import sys

from repvgg_seg.cli import (add_config_args, checkpoint_or_none,
                            parse_tool_args, run_cli)
from repvgg_seg.engines import ENGINES

STAGES = ('infer', 'single', 'batched', 'unbatched', 'latency', 'overload',
          'kill')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('weights', type=checkpoint_or_none)
    parser.add_argument('images', nargs='+', help='a folder or image files')
    parser.add_argument('--engine', choices=list(ENGINES), default='openvino')
    parser.add_argument('--precision', default='int8')
    parser.add_argument('--concurrency', type=int, default=8)
    parser.add_argument('--requests', type=int, default=400)
    parser.add_argument('--latency-requests', type=int, default=100)
    parser.add_argument('--overload-concurrency', type=int, default=64)
    parser.add_argument('--overload-requests', type=int, default=2000)
    parser.add_argument('--kill-seconds', type=float, default=20)
    parser.add_argument('--streams', type=int,
                        help="OpenVINO streams (default: its THROUGHPUT hint "
                        'chooses)')
    parser.add_argument('--request-timeout-s', type=float, default=30,
                        help='the service\'s limit (large images need more)')
    parser.add_argument('--max-batch-size', type=int, default=4)
    parser.add_argument('--batch-wait-ms', type=float, default=5)
    parser.add_argument('--port', type=int, default=8000)
    parser.add_argument('--stages', nargs='+', choices=STAGES,
                        default=list(STAGES))
    parser.add_argument('--out-json', help='write the report here')
    add_config_args(parser, checkpoints=False)
    return parse_tool_args(parser, argv)


def main(argv=None):
    from repvgg_seg.bench.host import cpu_description
    from repvgg_seg.evaluation.images import image_files
    from repvgg_seg.io.files import write_json
    from repvgg_seg.serving import ServeOptions
    from repvgg_seg.serving.benchmark import (ServingBenchmarkOptions,
                                              run_serving_benchmark)
    args = parse_args(argv)
    images = image_files(args.images)
    options = ServingBenchmarkOptions(
        serve=ServeOptions(config=args.config, weights=args.weights,
                           engine=args.engine, precision=args.precision,
                           streams=args.streams,
                           request_timeout_s=args.request_timeout_s,
                           max_batch_size=args.max_batch_size,
                           batch_wait_ms=args.batch_wait_ms, port=args.port,
                           cfg_options=args.cfg_options),
        images=images, concurrency=args.concurrency, requests=args.requests,
        latency_requests=args.latency_requests,
        overload_concurrency=args.overload_concurrency,
        overload_requests=args.overload_requests,
        kill_seconds=args.kill_seconds, stages=tuple(args.stages))
    report = dict(host=cpu_description(), images=len(images),
                  **run_serving_benchmark(options))
    text = json.dumps(report, indent=1)
    if args.out_json:
        write_json(report, args.out_json)
    sys.stdout.write(text + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
