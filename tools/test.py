"""Evaluate a checkpoint: mIoU, mAcc, aAcc and per-class IoU (mmseg IoUMetric).

    python tools/test.py CONFIG CHECKPOINT [--fuse] [--tta]
        [--engine torch|fused|winograd|onnxruntime|openvino]
        [--precision fp32|bf16|fp16|int8|int8-bf16] [--streams N]
        [--out-json FILE] [--show-dir DIR] [--format-only]
        [--cfg-options k=v ...] [--data-check full|quick|off]

CHECKPOINT is what the engine takes: a PyTorch checkpoint (.pth,
.safetensors; training or deploy), an ONNX file (onnxruntime, openvino) or
an OpenVINO IR (MODEL.xml, fp32 or INT8 from tools/quantize.py), evaluated
in the config's own test loop.
"""
import argparse
import sys

from repvgg_seg.io.files import write_json
from repvgg_seg.cli import add_runner_args, parse_runner_args, run_cli
from repvgg_seg.runs import (TEST_ENGINES, TestOptions, run_test,
                             setup_test_cfg)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--work-dir')
    parser.add_argument('--fuse', action='store_true',
                        help='re-parameterize RepVGG and fold conv+BN first '
                        '(the same as --engine fused)')
    parser.add_argument('--tta', action='store_true',
                        help="mmseg's test-time augmentation (the config's "
                        'tta_model and tta_pipeline)')
    parser.add_argument('--engine', choices=list(TEST_ENGINES),
                        default='torch',
                        help='fused: re-parameterized; winograd: fused, '
                        'stride-1 3x3 convs on NNPACK (CPU); onnxruntime/'
                        'openvino: a checkpoint exported on the fly, or '
                        'CHECKPOINT is an .onnx/.xml file')
    parser.add_argument('--precision', default='fp32',
                        choices=['fp32', 'bf16', 'fp16', 'int8',
                                 'int8-bf16'],
                        help='the engine\'s precision (an INT8 IR runs its '
                        'quantized layers in INT8 whatever it is; int8-bf16: '
                        'its other layers in bf16)')
    parser.add_argument('--streams', type=int,
                        help='OpenVINO infer requests in flight')
    parser.add_argument('--out-json', help='write the metrics to this file')
    parser.add_argument('--show-dir', help='write colourised predictions')
    parser.add_argument('--format-only', action='store_true',
                        help='write Cityscapes submission files, no metrics')
    parser.add_argument('--out-dir', help='with --format-only: where to')
    add_runner_args(parser)
    return parse_runner_args(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    options = TestOptions(
        work_dir=args.work_dir, cfg_options=args.cfg_options,
        launcher=args.launcher, trust_checkpoint=args.trust_checkpoint,
        data_check=args.data_check, engine=args.engine, fuse=args.fuse,
        precision=args.precision, streams=args.streams, tta=args.tta,
        show_dir=args.show_dir, format_only=args.format_only,
        out_dir=args.out_dir)
    metrics = run_test(setup_test_cfg(args.config, args.checkpoint, options))
    if args.out_json:
        write_json({k: float(v) for k, v in metrics.items()}, args.out_json)


if __name__ == '__main__':
    sys.exit(run_cli(main))
