"""Check that the data sets of a config load correctly in mmseg: images and
labels paired, sizes equal, label values valid, image formats that mmseg's
loaders convert correctly, images at least as large as a RandomCrop that
sees them unresized. tools/train.py and tools/test.py run the same check
before they start (``--data-check``).

    python tools/check_dataset.py CONFIG [--splits train val] [--quick]
        [--nproc N] [--data-root DIR] [--cfg-options k=v ...]

Exit status 2 with ``error: <message>`` when a data set has problems.
"""
import argparse
import sys

from repvgg_seg.datasets import DatasetError, check_segmentation_dataset
from repvgg_seg.datasets.checks import default_nproc
from repvgg_seg.datasets.config_check import config_datasets, missing_data_hint
from repvgg_seg.cli import add_config_args, parse_tool_args, run_cli
from repvgg_seg.config import load_config


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='config file')
    parser.add_argument('--splits', nargs='+', default=['train', 'val'],
                        help='dataloaders to check: {split}_dataloader '
                        '(default: train val)')
    parser.add_argument('--quick', action='store_true',
                        help='pairing and file headers only (no decoding)')
    parser.add_argument('--nproc', type=int, default=default_nproc(),
                        help='processes that decode files (default: the '
                        'CPUs this process may use, at most 8)')
    parser.add_argument('--data-root', help='override the datasets\' '
                        'data_root')
    add_config_args(parser, checkpoints=False)
    return parse_tool_args(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    failed = []
    for split, classes, options in config_datasets(cfg, args.splits,
                                                   args.data_root):
        print(f'== {split}: {options["data_root"] or ""} '
              f'{options["img_dir"]} / {options["ann_dir"]}')
        try:
            report = check_segmentation_dataset(
                **options, quick=args.quick, nproc=args.nproc)
        except DatasetError as exc:
            print(f'error: {exc}{missing_data_hint(cfg, split, str(exc))}',
                  file=sys.stderr)
            failed.append(split)
            continue
        print(report.format(classes))
    if failed:
        return 2
    print('ok: ' + ', '.join(args.splits))
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
