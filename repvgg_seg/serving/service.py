"""One replica's work, apart from HTTP: the model loaded and warmed up
(:class:`SegmentationService`), requests' images batched across requests
into engine calls with Ray Serve's ``serve.batch``, and the answers drawn
and encoded (labels PNG, colour PNG, JPEG overlay, JSON).

The labels are those of
:class:`~repvgg_seg.inference.predictor.SegmentationPredictor`, the step
``tools/infer.py`` runs, so the service answers what the tool writes for
the same image, weights and engine. Images of one shape share
an engine call; images of different shapes in one batch run one call per
shape, never padded together (padding would change what the model sees).
The engine calls run in a thread pool (the runtimes release the GIL), so
the replica's event loop keeps reading and decoding requests meanwhile;
OpenVINO compiled for throughput runs as many batches at once as it has
requests in flight (``max_concurrent_batches``).
"""
import asyncio
import os.path as osp
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
import torch
from mmengine.logging import print_log
from ray import serve

from ..inference.drawing import LabelPainter, encode_image
from ..inference.predictor import (SegmentationPredictor,
                                    throughput_streams)
from .metrics import ServiceMetrics
from .options import OUTPUTS, ServeOptions


@dataclass
class Segmentation:
    """One request's answer: its labels (train ids, ``H x W`` uint8), how
    many requests shared its engine call, and the milliseconds it waited
    for its batch and the batch's engine call took."""
    labels: np.ndarray
    batch_size: int = 1
    timings_ms: Dict[str, float] = field(default_factory=dict)


@dataclass
class _Pending:
    image: np.ndarray
    queued: float = field(default_factory=time.perf_counter)


def warm_up_size(cfg) -> tuple:
    """``(height, width)`` of an image the test pipeline keeps as it is:
    its ``Resize`` scale (mmseg's ``(w, h)``) where it has one, else the
    slide crop, else 512x512."""
    for step in cfg.get('test_pipeline') or []:
        scale = step.get('scale') if isinstance(step, dict) else None
        if step.get('type') == 'Resize' and scale:
            return int(scale[1]), int(scale[0])
    crop = (cfg.model.get('test_cfg') or {}).get('crop_size')
    return tuple(crop) if crop else (512, 512)


class SegmentationService:
    """The model of ``options`` (see the module docstring); ``ready`` once
    loaded and warmed up."""

    def __init__(self, options: ServeOptions):
        self.options = options
        self.ready = False
        self.closed = False
        self.predictor = SegmentationPredictor(
            options.config, options.weights, engine=options.engine,
            precision=options.precision, device=options.device,
            streams=throughput_streams(options.engine, options.streams),
            threads=options.threads, cfg_options=options.cfg_options)
        if self.predictor.runtime_has_own_threads:
            torch.set_num_threads(1)  # the replica's process is the model's
        self.metrics = ServiceMetrics()
        self.painter = LabelPainter(self.predictor.dataset_meta,
                                    opacity=options.opacity)
        self.warm_up()
        concurrency = self.predictor.concurrency()
        self.executor = ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix='engine')
        self._batched = serve.batch(
            max_batch_size=options.max_batch_size,
            batch_wait_timeout_s=options.batch_wait_ms / 1000,
            max_concurrent_batches=concurrency)(self._segment_batch)
        self.ready = True

    def warm_up(self) -> None:
        """One image through the model, so that the engine's runner exists
        (exported or tuned at the first input) and the first request is
        not the slow one."""
        height, width = warm_up_size(self.predictor.model.cfg)
        start = time.perf_counter()
        self.predictor.predict([np.zeros((height, width, 3), np.uint8)])
        print_log(f'warmed up on a {height}x{width} image in '
                  f'{time.perf_counter() - start:.2f} s', logger='current')

    def check_health(self) -> None:
        """Raise where this replica cannot answer (Serve's health check
        restarts it)."""
        if not self.ready:
            raise RuntimeError('the model is not loaded')
        if self.closed:
            raise RuntimeError('the service was closed')

    # the model

    async def segment(self, image: np.ndarray) -> Segmentation:
        """The labels of one BGR image, batched with other requests'."""
        return await self._batched(_Pending(image))

    async def _segment_batch(self, pending: List[_Pending]
                             ) -> List[Segmentation]:
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        answers = await loop.run_in_executor(
            self.executor, self._predict_by_shape,
            [item.image for item in pending])
        engine_ms = (time.perf_counter() - start) * 1000
        return [Segmentation(label, shared, dict(
            queue=(start - item.queued) * 1000, inference=engine_ms))
            for item, (label, shared) in zip(pending, answers)]

    def _predict_by_shape(self, images: List[np.ndarray]) -> List[tuple]:
        """``(labels, images in its engine call)`` of each image: one
        engine call per image shape."""
        by_shape: Dict[tuple, List[int]] = {}
        for index, image in enumerate(images):
            by_shape.setdefault(image.shape, []).append(index)
        answers: List[Optional[tuple]] = [None] * len(images)
        for indices in by_shape.values():
            for index, label in zip(indices, self.predictor.predict(
                    [images[i] for i in indices])):
                answers[index] = (label, len(indices))
            self.metrics.engine_call(len(indices))
        return answers

    # the answers

    def encode(self, output: str, image: np.ndarray,
               result: Segmentation) -> bytes:
        """The body of an answer: ``labels`` (train-id PNG), ``color``
        (palette PNG), ``overlay`` (JPEG) or ``json``."""
        if output == 'labels':
            return encode_image(result.labels)
        if output == 'color':
            return encode_image(self.painter.colour_table[result.labels])
        if output == 'overlay':
            return encode_image(self.painter.overlay(image, result.labels),
                                '.jpg')
        raise ValueError(f'output {output!r} is no image; valid: '
                         f'{", ".join(OUTPUTS)}')

    def class_areas(self, labels: np.ndarray) -> List[dict]:
        """The classes present with their pixel counts and the fraction of
        the image they cover (ignored pixels, 255, are no class)."""
        counts = np.bincount(labels.ravel(), minlength=256)
        total = labels.size
        classes, palette = self.painter.classes, self.painter.palette
        return [dict(id=int(c), name=classes[c],
                     color=[int(v) for v in palette[c]],
                     pixels=int(counts[c]), fraction=counts[c] / total)
                for c in np.flatnonzero(counts[:len(classes)])]

    def model_info(self) -> dict:
        """What ``GET /v1/model`` says: the model, its classes and palette,
        the engine, how images are run (whole at the input shape, or slide
        windows) and the service's limits."""
        model = self.predictor.model
        test_cfg = dict(model.test_cfg or {})
        forward = self.predictor.engine_forward
        input_shape = None
        if forward is not None and forward.kind != 'checkpoint':
            input_shape = forward.file_run.input_shape
        return dict(
            config=osp.basename(self.options.config),
            weights=osp.basename(self.options.weights or '') or None,
            classes=list(self.painter.classes),
            palette=self.painter.palette.tolist(),
            engine=self.options.engine,
            precision=self.options.precision,
            device=self.predictor.device,
            mode=test_cfg.get('mode', 'whole'),
            crop_size=test_cfg.get('crop_size'),
            stride=test_cfg.get('stride'),
            input_shape=input_shape,
            image_size=list(warm_up_size(model.cfg)),
            # an INT8 engine's count of convs that run in INT8
            convs=model.engine_info.get('convs'),
            int8_convs=model.engine_info.get('int8_convs'),
            outputs=list(OUTPUTS),
            limits=dict(max_body_bytes=self.options.max_body_bytes,
                        max_pixels=self.options.max_pixels,
                        request_timeout_s=self.options.request_timeout_s,
                        max_batch_size=self.options.max_batch_size,
                        batch_wait_ms=self.options.batch_wait_ms))

    def close(self) -> None:
        """Stop the engine threads (the replica is going away)."""
        self.closed = True
        self.executor.shutdown(wait=False, cancel_futures=True)
