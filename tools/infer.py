"""Segment your own images, folders, path lists and videos on any engine.

    python tools/infer.py INPUT CONFIG WEIGHTS
        [--engine torch|fused|winograd|onnxruntime|openvino]
        [--precision fp32|bf16|fp16|int8|int8-bf16] [--out-dir DIR]
        [--opacity A] [--with-labels] [--legend] [--no-vis] [--vis-format F]
        [--save-pred color|trainid|labelid] [--batch-size N] [--streams N]
        [--threads N] [--device cpu|cuda] [--force]
        [--output-fourcc mp4v] [--output-fps FPS] [--out-json FILE]

INPUT: an image, a folder (searched recursively), a text file of image
paths, or a video. WEIGHTS: a training or deploy checkpoint (.pth,
.safetensors), an ONNX file or an OpenVINO IR (.xml, e.g. the INT8 one from
tools/quantize.py), or 'none' (random weights). Outputs mirror the input's
folders: DIR/vis/<name>.jpg (the prediction over the image; --vis-format
png for lossless ones) and, with
--save-pred, DIR/pred/<name>.png (train ids; labelid: Cityscapes label ids
for the official evaluation server; color: the palette); <name> keeps
the input's suffix where inputs share a stem (photo.png, photo.jpg:
DIR/vis/photo.png.jpg, DIR/vis/photo.jpg.jpg); a video gives
DIR/<video>.mp4 (same size and fps) and DIR/pred/<video>/<frame>.png.
A rerun skips inputs whose outputs exist (--force redoes them), and the
frames of a video whose label maps exist (--save-pred), and removes the
temporary files a killed run left; inputs that cannot be read are
skipped, listed at the end, and the exit status is 1.
Launched by torchrun (tools/dist_infer.sh) the inputs are split between the
ranks.
"""
import argparse
import os.path as osp
import sys

from repvgg_seg.cli import add_config_args, checkpoint_or_none, \
    parse_tool_args, run_cli
from repvgg_seg.engines import ENGINES
from repvgg_seg.inference import (PRED_FORMATS, InferenceOptions,
                                  run_inference)
from repvgg_seg.io.files import write_json


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('input', help='image, folder, list (.txt) or video')
    parser.add_argument('config')
    parser.add_argument('weights', type=checkpoint_or_none,
                        help="checkpoint, .onnx, .xml, or 'none' (random "
                        'weights)')
    parser.add_argument('--engine', choices=list(ENGINES), default='torch')
    parser.add_argument('--precision', default='fp32',
                        choices=['fp32', 'bf16', 'fp16', 'int8',
                                 'int8-bf16'])
    parser.add_argument('--out-dir', default='work_dirs/infer')
    parser.add_argument('--opacity', type=float, default=0.5,
                        help='of the prediction over the image (0-1)')
    parser.add_argument('--with-labels', action='store_true',
                        help='class names on the regions (mmseg)')
    parser.add_argument('--legend', action='store_true',
                        help='a legend of the classes present below')
    parser.add_argument('--no-vis', dest='save_vis', action='store_false',
                        help='no overlays (label maps only)')
    parser.add_argument('--vis-format', choices=['jpg', 'png'],
                        default='jpg', help='overlay files (default jpg)')
    parser.add_argument('--save-pred', choices=list(PRED_FORMATS),
                        help='also write label maps in this format')
    parser.add_argument('--batch-size', type=int, default=1,
                        help='images a batch (slide inference on OpenVINO: '
                        '2 keeps two requests busy to the last image)')
    parser.add_argument('--streams', type=int,
                        help='OpenVINO streams (default: OpenVINO\'s '
                        'THROUGHPUT hint chooses; 1: latency mode)')
    parser.add_argument('--threads', type=int, help='runtime CPU threads')
    parser.add_argument('--device', choices=['cpu', 'cuda'])
    parser.add_argument('--force', action='store_true',
                        help='redo inputs whose outputs exist')
    parser.add_argument('--output-fourcc', default='mp4v',
                        help='codec of an output video (default mp4v)')
    parser.add_argument('--output-fps', type=float,
                        help='fps of an output video (default: the input\'s)')
    parser.add_argument('--out-json', help='write the run\'s report here')
    add_config_args(parser)
    return parse_tool_args(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    options = InferenceOptions(
        out_dir=args.out_dir, engine=args.engine, precision=args.precision,
        device=args.device, batch_size=args.batch_size, streams=args.streams,
        threads=args.threads, opacity=args.opacity,
        with_labels=args.with_labels, legend=args.legend,
        save_vis=args.save_vis, vis_format=args.vis_format,
        save_pred=args.save_pred, force=args.force,
        output_fourcc=args.output_fourcc, output_fps=args.output_fps,
        cfg_options=args.cfg_options)
    report = run_inference(args.input, args.config, args.weights, options)
    if args.out_json:
        path = args.out_json
        if report.world_size > 1:  # one report per rank
            stem, suffix = osp.splitext(path)
            path = f'{stem}.rank{report.rank}{suffix}'
        write_json(report.as_dict(), path)
    if report.skipped:
        sys.stderr.write(f'{len(report.skipped)} inputs skipped:\n' + ''.join(
            f'  {path}: {reason}\n' for path, reason in report.skipped))
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
