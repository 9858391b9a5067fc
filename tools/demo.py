"""The embedded demo (the README's main command, ``make demo``).

Generates the synthetic mini-Cityscapes (if absent), trains
configs/demo/pspnet_repvgg_a0_synthetic.py from scratch on the CPU, tests it
unfused and fused, and writes work_dirs/demo/summary.json.
"""
import argparse
import json
import sys

from repvgg_seg.demo import DEMO_CONFIG, run_demo
from repvgg_seg.cli import run_cli


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default=DEMO_CONFIG)
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--data-root', default='data/synthetic_cityscapes')
    parser.add_argument('--max-iters', type=int,
                        help='shorter/longer training than the config')
    args = parser.parse_args(argv)
    summary = run_demo(args.config, args.work_dir, args.data_root,
                       args.max_iters)
    print(json.dumps(summary, indent=2))


if __name__ == '__main__':
    sys.exit(run_cli(main))
