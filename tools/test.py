"""Evaluate a checkpoint: mIoU, mAcc, aAcc and per-class IoU (mmseg IoUMetric).

    python tools/test.py CONFIG CHECKPOINT [--fuse]
        [--engine torch|winograd|openvino] [--out-json FILE]
        [--show-dir DIR] [--format-only] [--cfg-options k=v ...]
        [--data-check full|quick|off]

With --engine openvino, CHECKPOINT is an OpenVINO IR (MODEL.xml, fp32 or
INT8: tools/quantize.py) evaluated in the config's own test loop.
"""
import argparse
import sys

from repvgg_seg.io.files import write_json
from repvgg_seg.cli import add_runner_args, parse_runner_args, run_cli
from repvgg_seg.runs import TEST_ENGINES, run_test, setup_test_cfg


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--work-dir')
    parser.add_argument('--fuse', action='store_true',
                        help='re-parameterize RepVGG and fold conv+BN first')
    parser.add_argument('--engine', choices=list(TEST_ENGINES),
                        default='torch',
                        help='winograd: the fused model with its stride-1 3x3 '
                        'convs on NNPACK (CPU; implies --fuse); openvino: '
                        'CHECKPOINT is an OpenVINO IR (.xml, fp32 or INT8) '
                        'run in the test loop')
    parser.add_argument('--out-json', help='write the metrics to this file')
    parser.add_argument('--show-dir', help='write colourised predictions')
    parser.add_argument('--format-only', action='store_true',
                        help='write Cityscapes submission files, no metrics')
    parser.add_argument('--out-dir', help='with --format-only: where to')
    add_runner_args(parser)
    return parse_runner_args(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = setup_test_cfg(args.config, args.checkpoint, work_dir=args.work_dir,
                         fuse=args.fuse, show_dir=args.show_dir,
                         format_only=args.format_only, out_dir=args.out_dir,
                         cfg_options=args.cfg_options, launcher=args.launcher,
                         trust_checkpoint=args.trust_checkpoint,
                         data_check=args.data_check, engine=args.engine)
    metrics = run_test(cfg)
    if args.out_json:
        write_json({k: float(v) for k, v in metrics.items()}, args.out_json)


if __name__ == '__main__':
    sys.exit(run_cli(main))
