"""Inference speed of segmentors, several configs measured interleaved.

    python tools/benchmark.py CONFIG [CONFIG ...] [--fuse yes|no|both]
        [--shape H W] [--batch-size N] [--device cpu|cuda[:N]] [--tf32]
        [--threads N]
        [--precision fp32|bf16|fp16|int8|int8-bf16 ...] [--channels-last]
        [--layout nchw|cl ...] [--compile]
        [--engine torch|winograd|onnxruntime|openvino ...] [--warmup N]
        [--iters N] [--rounds N] [--checkpoint CKPT ...] [--ir MODEL.xml ...]
        [--streams N] [--peak] [--image IMG_OR_DIR ...]
        [--calib-images N] [--out-json FILE] [--cfg-options k=v ...]

Timed: one test-mode whole-image forward pass plus the resize of the logits
to the input size, per sample (preprocessing excluded; inputs generated).
Default: the paper's setting, 713x713, batch 1, all cores, random weights.
One row per config x fused x engine x precision x layout; all rows are
measured round-robin in one process; each reports the median and
IQR of its latencies, images/s, peak memory, GMACs, achieved GFLOP/s and its
speed ratio to the first row (see repvgg_seg/bench/timing.py). --peak also
times, in the same rounds, a large matmul, a 1x1 conv and the reference conv
(512->512 3x3 at 90x90) per precision the rows use (INT8: quantized, on
OpenVINO) and reports each row's GFLOP/s as % of its precision's measured
peak (the fastest of those kernels, named) and % of the reference conv
(--ceiling: the deprecated name of --peak). INT8 rows
(--engine openvino --precision int8) are quantized by NNCF on the --image
images (or generated ones, for speed only) and report how many convs run in
INT8; --ir times an IR as it is (e.g. the one tools/quantize.py wrote).
Throughput mode: --batch-size N --streams S runs N windows per sample on S
OpenVINO requests in flight (--streams 0: OpenVINO's THROUGHPUT hint).
On CUDA every row runs on the device (torch; onnxruntime's CUDA provider
with device-bound inputs and outputs); fp32 is IEEE fp32 (TF32 off) unless
--tf32; the peak's kernels are sized for the GPU.
"""
import argparse
import sys

from mmengine.logging import print_log

from repvgg_seg.bench import (BENCH_ENGINES, PRECISIONS, BenchmarkOptions,
                              benchmark, format_table)
from repvgg_seg.cli import add_config_args, parse_tool_args, run_cli
from repvgg_seg.io.files import write_json


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('configs', nargs='+', metavar='CONFIG')
    parser.add_argument('--fuse', choices=['yes', 'no', 'both'],
                        default='both',
                        help='unfused and/or fused (fuse_for_deploy) rows')
    parser.add_argument('--shape', type=int, nargs=2, default=[713, 713],
                        metavar=('H', 'W'))
    parser.add_argument('--batch-size', type=int, default=1)
    parser.add_argument('--device', default='cpu',
                        help='cpu, cuda or cuda:N (default cpu)')
    parser.add_argument('--tf32', action='store_true',
                        help='CUDA: let fp32 convs and matmuls run in TF32 '
                        '(default: off, IEEE fp32; recorded in the setup)')
    parser.add_argument('--threads', type=int,
                        help='torch/onnxruntime CPU threads (default: all '
                        'cores; --device cpu only)')
    parser.add_argument('--precision', nargs='+', default=['fp32'],
                        choices=list(PRECISIONS),
                        help='one or more; bf16/fp16: weights converted '
                        'once, forward under autocast; int8: --engine '
                        'openvino, quantized by NNCF on the --image images '
                        '(else generated ones: speed only)')
    parser.add_argument('--layout', nargs='+', choices=['nchw', 'cl'],
                        default=['nchw'],
                        help='one or more memory layouts (rows for each; cl: '
                        'channels-last)')
    parser.add_argument('--channels-last', action='store_const',
                        dest='layout', const=['cl'],
                        help='the same as --layout cl')
    parser.add_argument('--compile', action='store_true',
                        help='torch.compile the model (torch engine)')
    parser.add_argument('--engine', nargs='+', default=['torch'],
                        choices=list(BENCH_ENGINES),
                        help='one or more engines (rows for each); winograd '
                        '= NNPACK for the stride-1 3x3 convs, fp32 NCHW CPU')
    parser.add_argument('--warmup', type=int, default=2,
                        help='untimed passes per row first (default 2)')
    parser.add_argument('--iters', type=int, default=3,
                        help='timed passes per row and round (default 3)')
    parser.add_argument('--rounds', type=int, default=3,
                        help='interleaved rounds (default 3)')
    parser.add_argument('--checkpoint', nargs='+',
                        help='one checkpoint per config (default: random '
                        'weights)')
    parser.add_argument('--ir', nargs='+', metavar='MODEL.xml',
                        help='one OpenVINO IR per config, timed as it is in '
                        'a row of its own (e.g. from tools/quantize.py)')
    parser.add_argument('--streams', type=int,
                        help='OpenVINO infer requests in flight (throughput '
                        'mode with --batch-size N; 0: OpenVINO chooses)')
    parser.add_argument('--peak', action='store_true',
                        help='measure the peak of each precision (fastest of '
                        'a large matmul, 1x1 conv and the reference 3x3 '
                        'conv, in the same rounds) and report %% of it and '
                        '%% of the reference conv')
    parser.add_argument('--ceiling', action='store_true',
                        help='deprecated: the same as --peak')
    parser.add_argument('--image', nargs='+', metavar='IMG_OR_DIR',
                        help='agreement checks on these images (files or '
                        'folders, e.g. a val set) instead of a synthetic one')
    parser.add_argument('--calib-images', type=int, default=20,
                        help='images INT8 rows are calibrated on (the first '
                        'N of --image, else generated; default 20)')
    parser.add_argument('--out-json', help='write setup, peak, reference conv '
                        'and rows')
    add_config_args(parser)
    return parse_tool_args(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    if args.ceiling:
        print_log('--ceiling is deprecated: use --peak (the reference conv '
                  'is no ceiling; rows now report % of the measured peak)',
                  logger='current', level=30)
    options = BenchmarkOptions(
        fuse=args.fuse, shape=tuple(args.shape), batch_size=args.batch_size,
        device=args.device, threads=args.threads, engines=args.engine,
        precisions=args.precision, layouts=args.layout, compile=args.compile,
        warmup=args.warmup, iters=args.iters, rounds=args.rounds,
        peak=args.peak or args.ceiling, images=args.image,
        calib_images=args.calib_images, streams=args.streams, tf32=args.tf32)
    result = benchmark(args.configs, options, checkpoints=args.checkpoint,
                       cfg_options=args.cfg_options, irs=args.ir)
    print(format_table(result))
    if args.out_json:
        write_json(result, args.out_json)


if __name__ == '__main__':
    sys.exit(run_cli(main))
