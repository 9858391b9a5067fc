"""Checking a deployed model against the PyTorch model it came from: the
images it is checked on (a synthetic street-like image, or an image file;
folders are listed by :mod:`.images`), preprocessed exactly as the model's
data preprocessor does, and the agreement measures (max relative logit
error, pixel argmax agreement). Used by export, quantization and the
benchmark alike."""
import os.path as osp
import statistics
from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn

from ..errors import InputError
from ..models.convert import compare_outputs


def synthetic_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A uint8 HxWx3 image with smooth gradients, blobs and edges (more
    image-like than noise, so argmax agreement is meaningful)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.zeros((height, width, 3), np.float32)
    for c in range(3):
        fy, fx = rng.uniform(0.5, 4, size=2) * 2 * np.pi
        img[..., c] = 127 + 60 * np.sin(fy * yy / height + fx * xx / width
                                        + rng.uniform(0, 6.3))
    for _ in range(12):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        ry = rng.uniform(0.05, 0.3) * height
        rx = rng.uniform(0.05, 0.3) * width
        mask = ((yy - cy) / ry)**2 + ((xx - cx) / rx)**2 < 1
        img[mask] = rng.uniform(0, 255, size=3)
    img += rng.normal(0, 4, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def load_image(path: str, height: int, width: int) -> np.ndarray:
    import mmcv
    if not osp.isfile(path):
        raise FileNotFoundError(f'image not found: {path}')
    img = mmcv.imread(path)  # BGR, as mmseg's LoadImageFromFile
    if img is None:
        raise InputError(f'not a readable image: {path}')
    return mmcv.imresize(img, (width, height))


def preprocess(model: nn.Module, img: np.ndarray,
               device: Optional[Union[str, torch.device]] = 'cpu'
               ) -> torch.Tensor:
    """Normalize an HxWx3 uint8 image as the model's data preprocessor
    does (1x3xHxW float), on ``device`` (``None``: where the data
    preprocessor puts it, the model's device)."""
    tensor = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)
    pre = getattr(model, 'data_preprocessor', None)
    if pre is not None and hasattr(pre, 'mean'):
        out = pre({'inputs': [tensor]}, False)['inputs']
        if isinstance(out, (list, tuple)):
            out = torch.stack(list(out))
        out = out.float()
    else:
        out = (tensor.float()[None] - 127.5) / 64.0
    return out if device is None else out.to(device)


def agreement(reference: torch.Tensor, candidate: torch.Tensor) -> dict:
    """Max relative logit error (:func:`compare_outputs`) and pixel argmax
    agreement (%) of a deployed model's logits with the reference's."""
    ref, cand = reference.float().cpu(), candidate.float().cpu()
    agree = (ref.argmax(1) == cand.argmax(1)).float().mean().item() * 100
    return dict(max_rel_error=compare_outputs([ref], [cand])['max_rel_diff'],
                argmax_agreement_pct=agree)


def pooled_agreement(per_image: Sequence[dict]) -> dict:
    """Agreement over several same-size images: pixel agreement pooled
    (the mean, every image having as many pixels), the worst error."""
    return dict(
        max_rel_error=max(a['max_rel_error'] for a in per_image),
        argmax_agreement_pct=statistics.fmean(
            a['argmax_agreement_pct'] for a in per_image),
        min_image_agreement_pct=min(a['argmax_agreement_pct']
                                    for a in per_image),
        images=len(per_image))
