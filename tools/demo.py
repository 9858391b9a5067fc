"""The embedded demo (the README's main command, ``make demo``).

Generates the synthetic mini-Cityscapes (if absent), trains
configs/demo/pspnet_repvgg_a0_synthetic.py from scratch on the CPU, tests it
unfused and fused, quantizes it to an INT8 OpenVINO IR (calibrated on the
synthetic train split) and tests that too, and writes
work_dirs/demo/summary.json (mIoU, mIoU_fused, mIoU_int8, the INT8 speed-up)
and work_dirs/demo/predictions.png (val images: input | ground truth | fp32
| INT8).
"""
import argparse
import json
import sys

from repvgg_seg.cli import run_cli
from repvgg_seg.demo import DEMO_CONFIG, run_demo
from repvgg_seg.models import BLOCK_TYPES


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default=DEMO_CONFIG)
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--data-root', default='data/synthetic_cityscapes')
    parser.add_argument('--max-iters', type=int,
                        help='shorter/longer training than the config')
    parser.add_argument('--block', choices=sorted(BLOCK_TYPES),
                        help='the RepVGG block to train (model.backbone.'
                        'block, e.g. qarepvgg; default: the config\'s)')
    parser.add_argument('--no-int8', dest='int8', action='store_false',
                        help='skip the INT8 step (no OpenVINO/NNCF needed)')
    args = parser.parse_args(argv)
    summary = run_demo(args.config, args.work_dir, args.data_root,
                       args.max_iters, int8=args.int8, block=args.block)
    print(json.dumps(summary, indent=2))


if __name__ == '__main__':
    sys.exit(run_cli(main))
