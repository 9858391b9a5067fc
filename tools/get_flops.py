"""Params, FLOPs (multiply-adds) and Winograd MULs of an arch or a config.

    python tools/get_flops.py ARCH_OR_CONFIG [--shape H W] [--unfused]
        [--out-json FILE] [--cfg-options k=v ...]

ARCH (A0 ... B3g4, D2se): the ImageNet classifier of the paper's Table 4 in
deploy form at 224x224 (backbone + global pool + 1000-class linear).
CONFIG: the config's model at 713x713 (segmentor; logits resized to the
input) or 224x224 (classifier), fused for deployment unless --unfused.
FLOPs count multiply-adds (as the paper); Wino MULs count stride-1 3x3 convs
at 4/9 (Winograd F(2x2,3x3)). See repvgg_seg/bench/complexity.py for the
rounding rule of Table 4.
"""
import argparse
import sys

from repvgg_seg.bench.complexity import complexity, format_complexity
from repvgg_seg.cli import add_config_args, parse_tool_args, run_cli
from repvgg_seg.io.files import write_json


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('target', metavar='ARCH_OR_CONFIG')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'))
    parser.add_argument('--unfused', action='store_true',
                        help='count the training-time (multi-branch) model')
    parser.add_argument('--out-json', help='write params/flops/wino_muls')
    add_config_args(parser, checkpoints=False)
    return parse_tool_args(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    result = complexity(args.target, shape=args.shape,
                        fused=not args.unfused, cfg_options=args.cfg_options)
    print(format_complexity(result))
    if args.out_json:
        write_json(result, args.out_json)


if __name__ == '__main__':
    sys.exit(run_cli(main))
