"""Convert a trained checkpoint to a deploy (fused) checkpoint and config.

    python tools/convert.py CONFIG CHECKPOINT OUT [--force]
        [--format pth|safetensors] [--shape H W] [--trust-checkpoint]
        [--plant-outliers K [--plant-pairs N] [--plant-where WHERE]]
        [--cfg-options k=v ...]

Re-parameterizes every RepVGG block and folds the remaining conv+BN pairs
(``repvgg_seg.models.convert.fuse_for_deploy``), checks on a random input that
the logits match the original within 1e-4 (relative), and writes OUT plus the
deploy config next to it (``x.pth`` -> ``x_deploy.py``). Reload with
``repvgg_seg.apis.load_model(DEPLOY_CONFIG, OUT)`` or test it with
``tools/test.py DEPLOY_CONFIG OUT``. Segmentor and classifier (mmpretrain,
``default_scope='mmpretrain'``) configs both work.

--plant-outliers K writes the INT8 hard case instead: the fused model with
outlier channels (K times larger; the consumers divide them back, so fp32
is unchanged, checked like the fusion) in --plant-pairs conv pairs drawn
among --plant-where (backbone, decode_head, auxiliary_head, heads, any):
what plain INT8 post-training quantization of RepVGG breaks on
(``repvgg_seg.quantization.outliers.convert_with_outliers``).
"""
import argparse
import sys

from repvgg_seg.cli import (add_checkpoint_arg, add_config_args,
                            parse_tool_args, run_cli)
from repvgg_seg.deploy.convert import (FORMATS, ConvertOptions,
                                       convert_checkpoint)
from repvgg_seg.quantization.outliers import WHERE, convert_with_outliers


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='the training config')
    # the deploy checkpoint records its source checkpoint: it needs a file
    add_checkpoint_arg(parser, 'the trained checkpoint',
                       random_weights=False)
    parser.add_argument('out', help='the deploy checkpoint to write')
    parser.add_argument('--force', action='store_true',
                        help='overwrite OUT and its deploy config')
    parser.add_argument('--format', choices=FORMATS,
                        help='default: from the suffix of OUT (pth unless '
                        '.safetensors)')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='input size of the equivalence check (default '
                        '256 256 for a segmentor, 224 224 for a classifier)')
    parser.add_argument('--tolerance', type=float, default=1e-4,
                        help='max relative logit difference (default 1e-4)')
    parser.add_argument('--plant-outliers', type=float, metavar='K',
                        help='plant outlier channels K times larger (50-200 '
                        'breaks plain INT8); fp32 unchanged')
    parser.add_argument('--plant-pairs', type=int, default=4, metavar='N',
                        help='conv pairs planted (default 4)')
    parser.add_argument('--plant-where', default='decode_head',
                        choices=WHERE,
                        help='where the planted producers are drawn '
                        '(default decode_head: feeding the PSP head)')
    add_config_args(parser)
    return parse_tool_args(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    options = ConvertOptions(fmt=args.format, force=args.force,
                             cfg_options=args.cfg_options, shape=args.shape,
                             tolerance=args.tolerance)
    if args.plant_outliers is None:
        report = convert_checkpoint(args.config, args.checkpoint, args.out,
                                    options)
    else:
        report = convert_with_outliers(
            args.config, args.checkpoint, args.out, options,
            k=args.plant_outliers, pairs=args.plant_pairs,
            where=args.plant_where)
    print(f'deploy checkpoint: {report["checkpoint"]} ({report["format"]})')
    print(f'deploy config:     {report["config"]}')
    print(f'max relative logit difference fused vs original: '
          f'{report["max_rel_diff"]:.3g} (max abs '
          f'{report["max_abs_diff"]:.3g}) on a random '
          f'{report["shape"][0]}x{report["shape"][1]} input')


if __name__ == '__main__':
    sys.exit(run_cli(main))
