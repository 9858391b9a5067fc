"""The embedded demo behind ``make demo``: generate the synthetic
mini-Cityscapes, train PSPNet-RepVGG-A0 on it from scratch on the CPU, test
it unfused and fused, quantize it to INT8 (OpenVINO IR, calibrated on the
train split) and test that, and write a summary and a picture of
predictions."""
import os
import os.path as osp
import time
from typing import Optional

import numpy as np
import torch
from mmengine.logging import print_log

from .datasets import make_synthetic_cityscapes
from .io.files import atomic_write_bytes, write_json
from .runs import run_test, run_train, setup_test_cfg, setup_train_cfg

DEMO_CONFIG = 'configs/demo/pspnet_repvgg_a0_synthetic.py'
#: val images drawn in predictions.png
PREDICTION_ROWS = 3


def run_demo(config: str = DEMO_CONFIG,
             work_dir: str = 'work_dirs/demo',
             data_root: str = 'data/synthetic_cityscapes',
             max_iters: int = None,
             seed: int = 0,
             synthetic: Optional[dict] = None,
             cfg_options: Optional[dict] = None,
             int8: bool = True,
             block: Optional[str] = None) -> dict:
    """Run the demo end to end and return (and write) its summary.

    Args:
        synthetic: arguments of :func:`make_synthetic_cityscapes` (default:
            its defaults, the demo's data set).
        cfg_options: more config overrides (tests shrink the model).
        int8: also quantize the trained model (:func:`int8_step`): the
            summary gains ``mIoU_int8``, the INT8 speed-ups and the INT8
            agreement, and ``predictions.png`` is drawn. Needs the
            ``deploy`` extra (OpenVINO, NNCF).
        block: the RepVGG block type to train (``model.backbone.block``,
            e.g. ``'qarepvgg'``); ``None``: the config's.
    """
    # the demo's own data folder: made again when its parameters or the
    # generator changed (a folder that is not a synthetic set is refused)
    make_synthetic_cityscapes(data_root, seed=seed,
                              **{'overwrite': True, **(synthetic or {})})
    options = {'train_dataloader.dataset.data_root': data_root,
               'val_dataloader.dataset.data_root': data_root,
               'test_dataloader.dataset.data_root': data_root,
               'randomness.seed': seed}
    if max_iters is not None:
        warmup = max(1, min(20, max_iters // 10))  # the config's 20 of 300
        options.update({'train_cfg.max_iters': max_iters,
                        'train_cfg.val_interval': max_iters,
                        'param_scheduler.0.end': warmup,
                        'param_scheduler.1.begin': warmup,
                        'param_scheduler.1.end': max_iters})
    if block is not None:
        options['model.backbone.block'] = block
    options.update(cfg_options or {})
    cfg = setup_train_cfg(config, work_dir=work_dir, cfg_options=options)
    cfg.experiment_name = 'demo_train'
    start = time.perf_counter()
    run_train(cfg)
    train_seconds = time.perf_counter() - start
    checkpoint = osp.join(work_dir,
                          f'iter_{cfg.train_cfg.max_iters}.pth')

    results = {}
    for fused in (False, True):
        test_cfg = setup_test_cfg(config, checkpoint, work_dir=work_dir,
                                  fuse=fused, cfg_options=options)
        test_cfg.experiment_name = f'demo_test{"_fused" if fused else ""}'
        results[fused] = run_test(test_cfg)

    summary = dict(
        arch=cfg.model.backbone.arch,
        dilation=cfg.model.backbone.dilation,
        device='cuda' if torch.cuda.is_available() else 'cpu',
        threads=torch.get_num_threads(),
        iterations=cfg.train_cfg.max_iters,
        train_seconds=round(train_seconds, 1),
        # IoUMetric gives float32 numpy scalars of 2-decimal percentages,
        # which json does not take
        mIoU=round(float(results[False]['mIoU']), 2),
        mAcc=round(float(results[False]['mAcc']), 2),
        aAcc=round(float(results[False]['aAcc']), 2),
        mIoU_fused=round(float(results[True]['mIoU']), 2),
        checkpoint=checkpoint)
    if block is not None:
        summary['block'] = block
    if int8:
        summary.update(int8_step(config, checkpoint, work_dir, options))
        summary.update(infer_step(config, summary['int8_ir'], work_dir,
                                  options))
    path = osp.join(work_dir, 'summary.json')
    write_json(summary, path)
    print_log(f'demo summary written to {path}: {summary}', logger='current')
    return summary


def int8_step(config: str, checkpoint: str, work_dir: str,
              options: dict) -> dict:
    """The demo's INT8 step: quantize the trained model (calibrated on the
    whole synthetic train split, agreement on the val split; plain and
    equalized PTQ, the equalized IR is the one deployed), evaluate the
    INT8 IR in the test loop, time it against the fp32 model (interleaved)
    and draw ``predictions.png``. Returns the summary's INT8 fields.

    The demo reports the agreement rather than refusing a low one
    (``tools/quantize.py`` refuses below 98% by default): a demo trained
    for a few iterations has near-tie logits that INT8 flips easily."""
    from .backends import require
    from .bench import BenchmarkOptions, benchmark
    from .quantization.quantize import QuantizeOptions, quantize_segmentor
    require('openvino', 'the demo\'s INT8 step')
    require('nncf', 'the demo\'s INT8 step')
    int8_dir = osp.join(work_dir, 'int8')
    os.makedirs(int8_dir, exist_ok=True)
    ir = osp.join(int8_dir, 'model.xml')
    reports = {}
    # plain PTQ beside the equalized IR the demo deploys (the default):
    # what equalization does for this model
    for name, equalize in (('plain', False), ('equalized', True)):
        reports[name] = quantize_segmentor(
            config, checkpoint,
            ir if equalize else osp.join(int8_dir, 'plain.xml'),
            QuantizeOptions(
                calib_images=None, calib_split='train', heldout_images=None,
                min_agreement=0.0, force=True, cfg_options=options,
                equalize=equalize,
                out_json=osp.join(int8_dir, 'report.json' if equalize
                                  else 'plain_report.json')))
    report = reports['equalized']
    test_cfg = setup_test_cfg(config, ir, work_dir=work_dir,
                              cfg_options=options, engine='openvino')
    test_cfg.experiment_name = 'demo_test_int8'
    metrics = run_test(test_cfg)

    # the speed: the INT8 IR just tested vs the fused fp32 model in torch
    # and in OpenVINO, at the IR's size, measured round-robin
    val_images = osp.join(options['val_dataloader.dataset.data_root'],
                          'leftImg8bit', 'val')
    speed = benchmark([config], BenchmarkOptions(
        fuse='yes', shape=tuple(report['shape']),
        engines=('torch', 'openvino'), precisions=('fp32', ),
        warmup=1, iters=2, rounds=3, images=[val_images]),
        checkpoints=[checkpoint], cfg_options=options, irs=[ir])
    rows = {(r['engine'], r['precision']): r for r in speed['rows']}
    int8_row = rows[('openvino', 'int8')]
    ms = {key: round(r['latency_ms'], 2) for key, r in rows.items()}

    predictions = osp.join(work_dir, 'predictions.png')
    draw_predictions(config, checkpoint, ir, predictions, options)
    return dict(
        mIoU_int8=round(float(metrics['mIoU']), 2),
        int8_agreement_pct=round(report['argmax_agreement_pct'], 2),
        int8_ptq={name: dict(agreement_pct=round(
            r['argmax_agreement_pct'], 2), max_rel_error=round(
                r['max_rel_error'], 4), **{
                    f'heldout_{r["metric"]["name"]}_fp32': round(
                        r['metric']['fp32'], 2),
                    f'heldout_{r["metric"]["name"]}_int8': round(
                        r['metric']['int8'], 2)})
            for name, r in reports.items()},
        int8_heldout_images=report['heldout_images'],
        int8_calib_images=report['calib_images'],
        int8_convs=f'{report["int8_convs"]}/{report["convs"]}',
        int8_speedup=round(ms[('torch', 'fp32')]
                           / ms[('openvino', 'int8')], 2),
        int8_speedup_vs=('the fused fp32 model in PyTorch (eager), '
                         f'{report["shape"][0]}x{report["shape"][1]}, '
                         f'batch 1, {speed["setup"]["threads"]} threads'),
        int8_speedup_vs_openvino_fp32=round(
            ms[('openvino', 'fp32')] / ms[('openvino', 'int8')], 2),
        latency_ms=dict(torch_fp32=ms[('torch', 'fp32')],
                        openvino_fp32=ms[('openvino', 'fp32')],
                        openvino_int8=ms[('openvino', 'int8')]),
        int8_bench_convs=f'{int8_row["int8_convs"]}/{int8_row["convs"]}',
        int8_ir=ir, predictions=predictions)


def infer_step(config: str, ir: str, work_dir: str, options: dict) -> dict:
    """The demo's last step, what a user does next: segment images with the
    INT8 IR through ``tools/infer.py``'s job -- the synthetic val images
    (overlays with a legend, train-id label maps) and a short video made
    from them. Returns the summary's inference fields."""
    import cv2

    from .inference import InferenceOptions, run_inference
    from .inference.sources import folder_items
    val_images = osp.join(options['val_dataloader.dataset.data_root'],
                          'leftImg8bit', 'val')
    out_dir = osp.join(work_dir, 'infer')
    settings = dict(engine='openvino', legend=True, force=True,
                    cfg_options=options)
    images = run_inference(val_images, config, ir, InferenceOptions(
        out_dir=out_dir, save_pred='trainid', **settings))
    # a short video of the val images, 4 frames a second
    video = osp.join(work_dir, 'val_drive.mp4')
    frames = [cv2.imread(item.path) for item in folder_items(val_images)]
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*'mp4v'), 4.0,
                             (width, height))
    for frame in frames:
        writer.write(cv2.resize(frame, (width, height)))
    writer.release()
    clip = run_inference(video, config, ir, InferenceOptions(
        out_dir=out_dir, **settings))
    return dict(infer_images=images.done,
                infer_images_per_s=round(images.images_per_s, 2),
                infer_out_dir=out_dir,
                infer_video=osp.join(out_dir, 'val_drive.mp4'),
                infer_video_frames=clip.done)


def draw_predictions(config: str, checkpoint: str, ir: str, out: str,
                     options: dict, rows: int = PREDICTION_ROWS) -> None:
    """``out`` (PNG): the first ``rows`` val images as rows of input |
    ground truth | fp32 prediction | INT8 prediction, coloured with the
    data set's palette (Cityscapes) by mmseg's ``SegLocalVisualizer``.

    Both predictions come from mmseg's own ``test_step`` (pipeline,
    inference mode, post-processing): the fp32 one from the trained
    checkpoint, the INT8 one on the OpenVINO engine with the IR
    (:func:`repvgg_seg.engines.load_engine`)."""
    import mmcv
    from mmengine.dataset import pseudo_collate
    from mmseg.visualization import SegLocalVisualizer

    from .config import as_config
    from .engines import load_engine
    from .evaluation.windows import build_split
    cfg = as_config(config, options)
    model = load_engine(cfg, checkpoint, 'torch')
    dataset = build_split(cfg, 'val', annotations=True)
    int8_model = load_engine(cfg, ir, 'openvino')
    visualizer = SegLocalVisualizer.get_instance('repvgg_demo_predictions')
    visualizer.alpha = 1.0  # the colours, not blended with the image
    visualizer.set_dataset_meta(dataset.metainfo['classes'],
                                dataset.metainfo['palette'])
    classes, palette = (visualizer.dataset_meta['classes'],
                        visualizer.dataset_meta['palette'])

    def colour(image, seg):
        return visualizer._draw_sem_seg(np.zeros_like(image), seg, classes,
                                        palette, with_labels=False)

    lines, labels = [], []
    for index in range(min(rows, len(dataset))):
        batch = pseudo_collate([dataset[index]])
        with torch.no_grad():
            fp32 = model.test_step(batch)[0]
            int8 = int8_model.test_step(batch)[0]
        image = mmcv.imread(fp32.img_path, channel_order='rgb')
        labels += [sample.data.cpu().numpy().ravel() for sample in (
            fp32.gt_sem_seg, fp32.pred_sem_seg, int8.pred_sem_seg)]
        panels = [image, colour(image, fp32.gt_sem_seg),
                  colour(image, fp32.pred_sem_seg),
                  colour(image, int8.pred_sem_seg)]
        gap = np.full((image.shape[0], 4, 3), 255, np.uint8)
        line = [panels[0]]
        for panel in panels[1:]:
            line += [gap, panel]
        lines.append(np.concatenate(line, axis=1))
    width = max(line.shape[1] for line in lines)
    grid = [_titles(('input', 'ground truth', 'fp32', 'INT8'),
                    image.shape[1], width)]
    for line in lines:
        line = np.pad(line, ((0, 0), (0, width - line.shape[1]), (0, 0)),
                      constant_values=255)
        grid += [line, np.full((4, width, 3), 255, np.uint8)]
    # a legend of the classes in the pictures (the painter draws BGR)
    from .inference.drawing import LabelPainter
    legend = LabelPainter(dict(classes=classes, palette=palette)
                          ).legend_strip(np.unique(np.concatenate(labels)),
                                         width)
    grid.append(legend[..., ::-1])
    atomic_write_bytes(_png_bytes(np.concatenate(grid)[..., ::-1]), out)
    print_log(f'wrote {out}: {len(lines)} val images as input | ground '
              'truth | fp32 | INT8, with a legend', logger='current')


def _titles(names, column: int, width: int) -> np.ndarray:
    """A white strip with one title over each ``column``-wide panel (RGB;
    the panels are 4 px apart)."""
    import cv2
    strip = np.full((22, width, 3), 255, np.uint8)
    for k, name in enumerate(names):
        cv2.putText(strip, name, (k * (column + 4) + 4, 16),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return strip


def _png_bytes(bgr: np.ndarray) -> bytes:
    import cv2
    ok, encoded = cv2.imencode('.png', np.ascontiguousarray(bgr))
    if not ok:
        raise OSError('cannot encode predictions.png')
    return encoded.tobytes()
