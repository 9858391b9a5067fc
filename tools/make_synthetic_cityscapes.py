"""Write a synthetic mini-Cityscapes (street scenes drawn procedurally) in
the real Cityscapes layout, for tests and CPU demos.

    python tools/make_synthetic_cityscapes.py OUT_ROOT [--num-train N]
        [--num-val N] [--height H --width W] [--seed S] [--force]

Running it again with the same parameters does nothing; with other ones it
refuses unless --force is given.
"""
import argparse
import json
import sys

from repvgg_seg.datasets import make_synthetic_cityscapes
from repvgg_seg.cli import run_cli


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('out_root', help='data root to write, e.g. '
                        'data/synthetic_cityscapes')
    parser.add_argument('--num-train', type=int, default=60)
    parser.add_argument('--num-val', type=int, default=20)
    parser.add_argument('--height', type=int, default=256)
    parser.add_argument('--width', type=int, default=512)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--force', action='store_true',
                        help='replace a synthetic data set made with other '
                        'parameters')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    summary = make_synthetic_cityscapes(
        args.out_root, num_train=args.num_train, num_val=args.num_val,
        size=(args.height, args.width), seed=args.seed,
        overwrite=args.force)
    print(json.dumps(summary, indent=2))


if __name__ == '__main__':
    sys.exit(run_cli(main))
