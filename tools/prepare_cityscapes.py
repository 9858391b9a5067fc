"""Prepare the official Cityscapes download for mmseg: write
gtFine/*/*_gtFine_labelTrainIds.png (and train.txt / val.txt / test.txt).

    python tools/prepare_cityscapes.py CITYSCAPES_ROOT [--nproc N]

CITYSCAPES_ROOT holds the extracted leftImg8bit_trainvaltest.zip and
gtFine_trainvaltest.zip (leftImg8bit/ and gtFine/). Files already converted
are skipped, so the tool can be re-run after an interruption.
"""
import argparse
import sys

from repvgg_seg.datasets import prepare_cityscapes
from repvgg_seg.datasets.checks import default_nproc
from repvgg_seg.cli import run_cli


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('root', help='Cityscapes root, e.g. data/cityscapes')
    parser.add_argument('--nproc', type=int, default=default_nproc(),
                        help='worker processes (default: the CPUs this '
                        'process may use, at most 8)')
    parser.add_argument('--no-split-lists', action='store_true',
                        help='do not write train.txt / val.txt / test.txt')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    summary = prepare_cityscapes(args.root, nproc=args.nproc,
                                 split_lists=not args.no_split_lists)
    for split, counts in summary['splits'].items():
        print(f'{split}: {counts["samples"]} samples, '
              f'{counts["converted"]} converted from label ids, '
              f'{counts["drawn"]} drawn from polygons, '
              f'{counts["skipped"]} already up to date')
    for path in summary['split_lists']:
        print(f'wrote {path}')


if __name__ == '__main__':
    sys.exit(run_cli(main))
