"""Serve a model over HTTP on Ray Serve (see README, "Serve it").

    python tools/serve.py CONFIG WEIGHTS [--engine ...] [--precision ...]
        [--replicas N|auto] [--max-batch-size B] [--batch-wait-ms T]
        [--max-ongoing N] [--max-queued N] [--request-timeout-s S]
        [--host 127.0.0.1] [--port 8000] [--address auto|ADDR]
        [--token-file F | --insecure] [--metrics-port P]
        [--write-config serve.yaml]

WEIGHTS: a training or deploy checkpoint, an ONNX file or an OpenVINO IR,
as for tools/infer.py. The service listens on 127.0.0.1 unless --host says
otherwise; another host needs --token-file (clients send
'Authorization: Bearer <token>') or, explicitly, --insecure. --address
joins a running Ray cluster ('auto': the one `ray start` made here).
--metrics-port: Prometheus metrics of a local Ray (Ray Serve's and the
service's) at http://127.0.0.1:P/metrics. --write-config writes a Serve
config file for `serve deploy` and exits.
"""
import argparse
import sys

from mmengine.logging import print_log

from repvgg_seg.cli import (add_config_args, checkpoint_or_none,
                            parse_tool_args, run_cli)
from repvgg_seg.engines import ENGINES


def replicas(value: str):
    if value == 'auto':
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'a number or auto, not {value!r}') from None


def parse_args(argv=None):
    from repvgg_seg.serving import ServeOptions
    defaults = ServeOptions()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('weights', type=checkpoint_or_none,
                        help="checkpoint, .onnx, .xml, or 'none' (random "
                        'weights)')
    parser.add_argument('--engine', choices=list(ENGINES),
                        default=defaults.engine)
    parser.add_argument('--precision', default=defaults.precision,
                        choices=['fp32', 'bf16', 'fp16', 'int8',
                                 'int8-bf16'])
    parser.add_argument('--device', choices=['cpu', 'cuda'])
    parser.add_argument('--threads', type=int, help='runtime CPU threads')
    parser.add_argument('--streams', type=int,
                        help="OpenVINO streams (default: its THROUGHPUT "
                        'hint chooses)')
    parser.add_argument('--replicas', type=replicas,
                        default=defaults.replicas,
                        help='replicas, or auto (Serve autoscaling up to '
                        '--max-replicas)')
    parser.add_argument('--max-replicas', type=int,
                        default=defaults.max_replicas)
    parser.add_argument('--cpus-per-replica', type=float,
                        default=defaults.cpus_per_replica)
    parser.add_argument('--gpus-per-replica', type=float,
                        default=defaults.gpus_per_replica)
    parser.add_argument('--max-batch-size', type=int,
                        default=defaults.max_batch_size,
                        help='images an engine call takes')
    parser.add_argument('--batch-wait-ms', type=float,
                        default=defaults.batch_wait_ms,
                        help='longest wait for a batch to fill')
    parser.add_argument('--max-ongoing', type=int,
                        default=defaults.max_ongoing,
                        help='requests a replica holds at once')
    parser.add_argument('--max-queued', type=int,
                        default=defaults.max_queued,
                        help='requests waiting beyond those (then 503)')
    parser.add_argument('--request-timeout-s', type=float,
                        default=defaults.request_timeout_s,
                        help='then 504')
    parser.add_argument('--max-body-bytes', type=int,
                        default=defaults.max_body_bytes)
    parser.add_argument('--max-pixels', type=int,
                        default=defaults.max_pixels)
    parser.add_argument('--opacity', type=float, default=defaults.opacity,
                        help='of output=overlay')
    parser.add_argument('--host', default=defaults.host)
    parser.add_argument('--port', type=int, default=defaults.port)
    parser.add_argument('--address',
                        help="a Ray cluster to join ('auto' or HOST:PORT)")
    parser.add_argument('--token-file',
                        help='bearer token clients must send')
    parser.add_argument('--insecure', action='store_true',
                        help='serve another --host without a token')
    parser.add_argument('--metrics-port', type=int,
                        help="a local Ray's Prometheus port (127.0.0.1)")
    parser.add_argument('--write-config', metavar='YAML',
                        help='write a Serve config file and exit')
    add_config_args(parser, checkpoints=False)  # the safe loader only
    return parse_tool_args(parser, argv)


def main(argv=None):
    from repvgg_seg.serving import ServeOptions
    args = vars(parse_args(argv))
    out = args.pop('write_config')
    options = ServeOptions(**args)
    if out:
        from repvgg_seg.serving.server import write_serve_config
        write_serve_config(options, out)
        print_log(f'wrote {out}; start it with: serve deploy {out}',
                  logger='current')
        return 0
    from repvgg_seg.serving.server import SegmentationServer
    with SegmentationServer(options) as server:
        server.wait()
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
