"""The embedded demo behind ``make demo``: generate the synthetic
mini-Cityscapes, train PSPNet-RepVGG-A0 on it from scratch on the CPU, test
it unfused and fused, and write a summary."""
import os.path as osp
import time
from typing import Optional

import torch
from mmengine.logging import print_log

from .datasets import make_synthetic_cityscapes
from .io.files import write_json
from .runs import run_test, run_train, setup_test_cfg, setup_train_cfg

DEMO_CONFIG = 'configs/demo/pspnet_repvgg_a0_synthetic.py'


def run_demo(config: str = DEMO_CONFIG,
             work_dir: str = 'work_dirs/demo',
             data_root: str = 'data/synthetic_cityscapes',
             max_iters: int = None,
             seed: int = 0,
             synthetic: Optional[dict] = None,
             cfg_options: Optional[dict] = None) -> dict:
    """Run the demo end to end and return (and write) its summary.

    Args:
        synthetic: arguments of :func:`make_synthetic_cityscapes` (default:
            its defaults, the demo's data set).
        cfg_options: more config overrides (tests shrink the model).
    """
    make_synthetic_cityscapes(data_root, seed=seed, **(synthetic or {}))
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
    path = osp.join(work_dir, 'summary.json')
    write_json(summary, path)
    print_log(f'demo summary written to {path}: {summary}', logger='current')
    return summary
