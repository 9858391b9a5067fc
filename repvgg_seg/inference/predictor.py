"""Label maps of decoded images on any engine: the one prediction step of
``tools/infer.py`` and of the HTTP service (:mod:`repvgg_seg.serving`), so
both give the same labels for the same image, weights and engine.

:class:`SegmentationPredictor` holds a
:class:`~repvgg_seg.inference.RepVGGSegInferencer` and runs mmseg's
``test_step`` on a batch of BGR images: the inferencer's pipeline and
``collate``, the data preprocessor, slide or whole inference and
post-processing -- or, where mmseg's post-processing would only take the
argmax, the labels the engine computes in its graph
(:meth:`SegmentationPredictor.graph_labels`).
"""
import os
from typing import List, Optional

import numpy as np
import torch

from ..engines import get_engine


def local_device(device: str) -> str:
    """``device`` for this process: under ``torchrun`` (``LOCAL_RANK``) a
    bare ``'cuda'`` is ``cuda:LOCAL_RANK``, so that every rank of
    ``tools/dist_infer.sh`` runs on a GPU of its own (torch and onnxruntime
    would all take the first one)."""
    local_rank = os.environ.get('LOCAL_RANK')
    if device == 'cuda' and local_rank is not None:
        return f'cuda:{int(local_rank)}'
    return device


def throughput_streams(engine: str, streams: Optional[int]) -> Optional[int]:
    """OpenVINO's requests in flight for many inputs at once (a folder, a
    video, concurrent requests): ``streams`` where given, else ``0``, its
    THROUGHPUT hint; the other engines take ``streams`` as it is."""
    if streams is None and engine == 'openvino':
        return 0
    return streams


class SegmentationPredictor:
    """The config's model with ``weights`` on ``engine`` (see the module
    docstring). ``streams``: OpenVINO's requests in flight (``0``: its
    THROUGHPUT hint chooses); ``device``: None is the engine's default
    (:meth:`~repvgg_seg.engines.base.Engine.default_device`), ``cuda`` is
    this rank's GPU under ``torchrun``."""

    def __init__(self, config, weights: Optional[str],
                 engine: str = 'torch', precision: str = 'fp32',
                 device: Optional[str] = None,
                 streams: Optional[int] = None,
                 threads: Optional[int] = None,
                 cfg_options: Optional[dict] = None):
        from .inferencer import RepVGGSegInferencer
        self.engine = engine
        self.device = local_device(device
                                   or get_engine(engine).default_device())
        if self.device.startswith('cuda:'):
            torch.cuda.set_device(self.device)  # libraries' default GPU
        self.inferencer = RepVGGSegInferencer(
            model=config, weights=weights, engine=engine,
            precision=precision, streams=streams, threads=threads,
            device=self.device, graph_labels=True, cfg_options=cfg_options)
        self.model = self.inferencer.model

    @property
    def dataset_meta(self) -> dict:
        """Class names and palette."""
        return self.model.dataset_meta

    @property
    def runtime_has_own_threads(self) -> bool:
        """Whether a runtime besides torch runs the model on the CPU with
        its own threads on every core (then torch's, for the pre- and
        post-processing around it, would only contend)."""
        return self.engine in ('onnxruntime', 'openvino') and \
            self.device == 'cpu'

    @property
    def engine_forward(self):
        """The engine's forward (None for torch's own fp32 forward)."""
        return getattr(self.model, 'engine_forward', None)

    def predict(self, images: List[np.ndarray]) -> List[np.ndarray]:
        """Label maps (train ids, ``H x W`` uint8) of BGR images, one
        batch (see the module docstring)."""
        samples = [self.inferencer.pipeline(image) for image in images]
        data = self.inferencer.collate_fn(samples)
        with torch.no_grad():
            data = self.model.data_preprocessor(data, False)
            labels = self.graph_labels(data['inputs'], data['data_samples'])
            if labels is not None:
                return [lab.numpy().astype(np.uint8) for lab in labels]
            results = self.model.predict(data['inputs'],
                                         data['data_samples'])
        return [r.pred_sem_seg.data[0].cpu().numpy().astype(np.uint8)
                for r in results]

    def graph_labels(self, inputs: torch.Tensor,
                     samples) -> Optional[torch.Tensor]:
        """The labels the engine computes in its graph, where mmseg's
        post-processing would only take the argmax: whole inference, no
        padding, no flip, the image at its original size (mmseg's bilinear
        resize to the same size is the identity), more than one class.
        None elsewhere (slide windows are averaged first, a resized image
        needs its logits resized)."""
        forward = self.engine_forward
        if forward is None or forward.mode != 'whole' or \
                self.model.out_channels < 2:
            return None
        size = tuple(inputs.shape[2:])
        for sample in samples:
            meta = sample.metainfo
            padding = meta.get('img_padding_size',
                               meta.get('padding_size', [0] * 4))
            if any(padding) or meta.get('flip') or \
                    tuple(meta['ori_shape']) != size:
                return None
        return forward.labels(inputs)

    def concurrency(self) -> int:
        """Calls the engine runs at once (OpenVINO's requests in flight),
        1 before its first runner is made or where calls run one at a
        time."""
        forward = self.engine_forward
        return forward.concurrency() if forward is not None else 1

    def runner_pending(self) -> bool:
        """Whether the engine makes its runner at the first input (from a
        checkpoint: exported or tuned for that shape)."""
        forward = self.engine_forward
        return forward is not None and forward.kind == 'checkpoint' and \
            not forward.runners
