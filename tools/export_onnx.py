"""Export a fused segmentor (logits at the input size) to ONNX and check it.

    python tools/export_onnx.py CONFIG CHECKPOINT OUT.onnx [--shape H W]
        [--batch-size N] [--dynamic] [--openvino] [--force] [--opset 17]
        [--image IMG] [--cfg-options k=v ...] [--trust-checkpoint]

CHECKPOINT is a training checkpoint (with its training config) or a deploy
checkpoint (with the deploy config tools/convert.py wrote); 'none' exports
random weights. The model is fused (RepVGG re-parameterized, conv+BN folded),
exported, and run with onnxruntime against torch: the max relative logit
error and the argmax agreement are printed, and the exit status is non-zero
(nothing written) if the error exceeds 1e-4. --openvino also writes an
OpenVINO IR (OUT.xml/.bin, fp32 weights), checked the same way with
OpenVINO's CPU plugin.
"""
import argparse
import sys

from repvgg_seg.cli import (add_checkpoint_arg, add_config_args,
                            parse_tool_args, run_cli)
from repvgg_seg.deploy.export import OPSET, ExportOptions, export_onnx


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    add_checkpoint_arg(parser, 'a training or deploy checkpoint')
    parser.add_argument('out', help='the .onnx file to write')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='input size (default 713 713 for a segmentor)')
    parser.add_argument('--batch-size', type=int, default=1)
    parser.add_argument('--dynamic', action='store_true',
                        help='dynamic batch, height and width')
    parser.add_argument('--openvino', action='store_true',
                        help='also write an OpenVINO IR next to OUT')
    parser.add_argument('--force', action='store_true',
                        help='overwrite existing outputs')
    parser.add_argument('--opset', type=int, default=OPSET)
    parser.add_argument('--tolerance', type=float, default=1e-4)
    parser.add_argument('--image', help='check on this image instead of a '
                        'synthetic one')
    add_config_args(parser)
    return parse_tool_args(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    report = export_onnx(args.config, args.checkpoint, args.out,
                         ExportOptions(
                             shape=args.shape, batch_size=args.batch_size,
                             dynamic=args.dynamic, openvino=args.openvino,
                             opset=args.opset, tolerance=args.tolerance,
                             image=args.image, force=args.force,
                             cfg_options=args.cfg_options))
    for check in report['checks']:
        print(f'{check["runtime"]} vs torch at {check["shape"][0]}x'
              f'{check["shape"][1]}: max relative logit error '
              f'{check["max_rel_error"]:.3g}, argmax agreement '
              f'{check["argmax_agreement_pct"]:.3f}%')
    print(f'wrote {report["onnx"]}')
    if report['openvino']:
        print(f'wrote {" and ".join(report["openvino"])}')


if __name__ == '__main__':
    sys.exit(run_cli(main))
