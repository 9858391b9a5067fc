"""Quantize a trained segmentor to an INT8 OpenVINO IR (NNCF), checked.

    python tools/quantize.py CONFIG CHECKPOINT OUT.xml [--shape H W]
        [--calib-images N] [--calib-split train|val] [--heldout-images N]
        [--preset performance|mixed] [--min-agreement PCT] [--generated]
        [--equalize | --no-equalize] [--metric auto|miou|agreement]
        [--max-drop POINTS [--max-fp32-layers N]] [--keep-fp32 LAYER ...] [--sensitivity [LAYER ...]]
        [--force] [--out-json REPORT] [--cfg-options k=v ...]

The model is fused, equalized (cross-layer equalization, exact in fp32:
--no-equalize to skip it), exported (checked against torch) and quantized
with NNCF on calibration images from the config's data (through its own
test pipeline and data preprocessor, cut into the windows of its test_cfg).
The held-out images score fp32 and INT8 with --metric (mmseg's mIoU when
they have labels, else pixel agreement with fp32); --max-drop keeps the
layers that cost most in fp32 (NNCF's accuracy control) until INT8 is within
that many points; --keep-fp32 names layers to keep in fp32 by hand (globs
of the model's module names, e.g. 'backbone.stage4.*'); --sensitivity adds
a per-layer table to the report. The report names the layers left in fp32.
CHECKPOINT 'none' quantizes random weights (speed tests; they rarely reach
the agreement bar: --min-agreement 0).
OUT.xml and OUT.bin (and REPORT) are written only when the INT8 model's
pixel argmax agreement with fp32 torch, measured on held-out images (the
val split when calibrating on train), reaches --min-agreement (default
98%); otherwise nothing is written and the exit status is 2. Prints the
report (JSON) on stdout. Evaluate the IR with
``tools/test.py CONFIG OUT.xml --engine openvino``.
"""
import argparse
import dataclasses
import json
import sys

from repvgg_seg.cli import (add_checkpoint_arg, add_config_args,
                            parse_tool_args, run_cli)
from repvgg_seg.evaluation.metrics import METRICS
from repvgg_seg.quantization.options import (CALIB_SPLITS, PRESETS,
                                             QuantizeOptions)
from repvgg_seg.quantization.quantize import quantize_segmentor


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    add_checkpoint_arg(parser, 'the trained checkpoint')
    parser.add_argument('out', metavar='OUT.xml',
                        help='the INT8 OpenVINO IR (OUT.bin beside it)')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='the IR\'s input size (default: the slide '
                        'crop, or the preprocessed size of whole images)')
    parser.add_argument('--calib-images', type=int, default=50,
                        help='calibration images (default 50)')
    parser.add_argument('--calib-split', choices=CALIB_SPLITS,
                        default='train',
                        help='the split calibrated on (default train; the '
                        'agreement is measured on val images either way, '
                        'never on calibration ones)')
    parser.add_argument('--heldout-images', type=int, default=20,
                        help='held-out images the agreement is measured '
                        'on (default 20)')
    parser.add_argument('--preset', choices=PRESETS, default='performance',
                        help='NNCF preset: performance (symmetric '
                        'activations) or mixed (asymmetric)')
    parser.add_argument('--min-agreement', type=float, default=98.0,
                        metavar='PCT',
                        help='write nothing (exit 2) below this pixel '
                        'argmax agreement with fp32 torch (default 98)')
    parser.add_argument('--equalize', action=argparse.BooleanOptionalAction,
                        default=True,
                        help='cross-layer equalization of the fused model '
                        'before quantization (default on; exact in fp32)')
    parser.add_argument('--metric', choices=METRICS, default='auto',
                        help='held-out metric: miou (labels needed), '
                        'agreement (pixel argmax agreement with fp32), or '
                        'auto (miou when the images have labels; default)')
    parser.add_argument('--max-drop', type=float, metavar='POINTS',
                        help='accuracy control: keep the most harmful '
                        'layers in fp32 until the metric is within this '
                        'many points of fp32 (write nothing if it cannot)')
    parser.add_argument('--max-fp32-layers', type=int, metavar='N',
                        help='with --max-drop: keep at most N layers in '
                        'fp32 (speed); nothing is written if the drop is '
                        'still too large')
    parser.add_argument('--keep-fp32', nargs='+', default=(),
                        metavar='LAYER',
                        help='layers left in fp32 (globs of module names: '
                        'backbone.stage4.3, decode_head.*)')
    parser.add_argument('--sensitivity', nargs='*', metavar='LAYER',
                        help='per-layer table in the report: the metric '
                        'with each layer alone left in fp32, for the '
                        'layers these globs select (none: every layer; '
                        'one quantization per layer)')
    parser.add_argument('--generated', action='store_true',
                        help='calibrate on generated images instead of the '
                        'data set (for speed tests only: no real accuracy)')
    parser.add_argument('--force', action='store_true',
                        help='overwrite existing outputs')
    parser.add_argument('--out-json', metavar='REPORT',
                        help='also write the report to this file')
    add_config_args(parser)
    return parse_tool_args(parser, argv)


def options_from_args(args) -> QuantizeOptions:
    """The :class:`QuantizeOptions` of the parsed arguments (each option
    is the field of its name)."""
    return QuantizeOptions(**{field.name: getattr(args, field.name)
                              for field in dataclasses.fields(
                                  QuantizeOptions)})


def main(argv=None):
    args = parse_args(argv)
    report = quantize_segmentor(args.config, args.checkpoint, args.out,
                                options_from_args(args))
    print(json.dumps(report, indent=2))


if __name__ == '__main__':
    sys.exit(run_cli(main))
