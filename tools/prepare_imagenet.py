"""Check (and complete) the ImageNet layout the classification configs read.

    python tools/prepare_imagenet.py [ROOT] [--val-ann FILE] [--classes N]

ROOT (default data/imagenet) must hold

    train/<class folder>/<images>      one folder per class (the wnids)
    val/<class folder>/<images>        the same class folders, or
    val/<images> + meta/val.txt        lines "<image name> <class index>",
                                       indices in the sorted order of train/

``--val-ann FILE`` checks such an annotation file against val/ and installs
it as meta/val.txt. Prints what it found; problems are reported as one
``error:`` message on stderr, naming each of them, with exit status 2.
"""
import argparse
import sys

from repvgg_seg.cli import run_cli
from repvgg_seg.datasets.imagenet import check_imagenet
from repvgg_seg.errors import DatasetError


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('root', nargs='?', default='data/imagenet')
    parser.add_argument('--val-ann', help='"<image> <class index>" labels '
                        'of a flat val/ folder, installed as meta/val.txt')
    parser.add_argument('--classes', type=int, default=1000,
                        help='expected number of classes (default 1000)')
    args = parser.parse_args(argv)
    problems, summary = check_imagenet(args.root, args.val_ann, args.classes)
    for line in summary:
        print(line)
    if problems:
        raise DatasetError(f'{len(problems)} problem(s) in {args.root}:\n'
                           + '\n'.join(f'- {line}' for line in problems))
    print('layout OK')
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
