"""Train a segmentor (or classifier) from a config with mmengine's Runner.

    python tools/train.py configs/pspnet_repvgg_b2.py [--work-dir DIR]
        [--resume [CKPT]] [--amp] [--cfg-options k=v ...]
        [--launcher none|pytorch|slurm] [--data-check full|quick|off]

The train and val data sets are checked before anything is built (see
repvgg_seg/datasets/config_check.py); a failed check names the files.
"""
import argparse
import sys

from repvgg_seg.cli import add_runner_args, parse_runner_args, run_cli
from repvgg_seg.runs import TrainOptions, run_train, setup_train_cfg


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='config file')
    parser.add_argument('--work-dir', help='outputs (default: '
                        'work_dirs/<config name>)')
    parser.add_argument(
        '--resume', nargs='?', const='auto', default=None,
        help='resume from CKPT, or from the latest checkpoint of the work dir '
        'when no path is given')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision')
    add_runner_args(parser)
    return parse_runner_args(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    options = TrainOptions(
        work_dir=args.work_dir, cfg_options=args.cfg_options,
        launcher=args.launcher, trust_checkpoint=args.trust_checkpoint,
        data_check=args.data_check, resume=args.resume, amp=args.amp)
    run_train(setup_train_cfg(args.config, options))


if __name__ == '__main__':
    sys.exit(run_cli(main))
