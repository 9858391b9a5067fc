"""Models for every tool, built the same way everywhere.

Everything the deployment and benchmark tools (``tools/convert.py``,
``tools/benchmark.py``, ``tools/get_flops.py``, ``tools/export_onnx.py``,
``tools/quantize.py``) need to turn a config (and a checkpoint) into a model
lives here, so that tests and notebooks do exactly what the command lines do:

* :func:`build_model` builds any config's model (an mmseg segmentor, an
  mmpretrain classifier, ...) through the config's own ``default_scope``, with
  SyncBN reverted to BN (nothing here is distributed) and no pretrained
  initialization (the weights are random unless a checkpoint is loaded).
  A deploy config's model (see :mod:`repvgg_seg.deploy.convert`) is fused
  right away.
* :func:`load_model` builds a config's model and loads a checkpoint into it
  (strictly), for training configs and deploy configs alike.
* :class:`LogitsModule` is the "what is timed / exported" forward: a
  segmentor's whole-image test-mode forward plus the resize of its logits to
  the input size (a classifier's logits as they are).
"""
import copy
import warnings
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.model import BaseModel, revert_sync_batchnorm
from mmengine.registry import MODELS, DefaultScope

from .. import models  # noqa: F401  (registers RepVGG in mmseg's MODELS)
from ..config import as_config
from ..errors import ConfigError, InputError
from ..io.checkpoint import load_checkpoint_file, trusted_checkpoints
from ..io.state_dict import extract_state_dict, load_state_dict_strict
from ..models.convert import fuse_for_deploy
from ..models.describe import mismatch_hint

#: top-level key of a deploy config (see :mod:`repvgg_seg.deploy.convert`)
DEPLOY_KEY = 'deploy'


# --------------------------------------------------------------------------
# building and loading


def is_deploy_config(cfg: Config) -> bool:
    """Whether ``cfg`` was written by :func:`convert_checkpoint`."""
    info = cfg.get(DEPLOY_KEY)
    return isinstance(info, dict) and bool(info.get('fused', False))


def build_model(config: Union[str, Config, dict],
                device: Union[str, torch.device] = 'cpu',
                cfg_options: Optional[dict] = None,
                fuse_if_deploy: bool = True) -> nn.Module:
    """Build a config's model with random weights, in eval mode.

    The model is built through the config's ``default_scope`` (``mmseg`` when
    it has none), so segmentors and mmpretrain classifiers both work. No
    ``init_weights`` is called (so no pretrained checkpoint is needed): the
    weights are PyTorch's default initialization. SyncBN is reverted to BN.
    A deploy config's model is fused right away (see the module docstring)
    unless ``fuse_if_deploy`` is False.
    """
    cfg = as_config(config, cfg_options)
    if 'model' not in cfg:
        raise ConfigError(f'config {cfg.filename} has no model')
    scope = cfg.get('default_scope', 'mmseg')
    with DefaultScope.overwrite_default_scope(scope), \
            warnings.catch_warnings():
        # mmseg's loss constructors warn about training-only defaults
        warnings.filterwarnings('ignore', message='.*build_loss.*')
        warnings.filterwarnings('ignore', message='.*avg_non_ignore.*')
        try:
            model = MODELS.build(copy.deepcopy(cfg.model))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f'cannot build the model of '
                              f'{cfg.filename}: {exc}') from None
    model = revert_sync_batchnorm(model)
    model.eval()
    if fuse_if_deploy and is_deploy_config(cfg):
        fuse_for_deploy(model)
    return model.to(device)


def load_model(config: Union[str, Config, dict],
               checkpoint: Optional[str] = None,
               device: Union[str, torch.device] = 'cpu',
               cfg_options: Optional[dict] = None) -> nn.Module:
    """Build a config's model and load ``checkpoint`` (strictly) into it.

    Works for training configs with training checkpoints and for the deploy
    configs :func:`convert_checkpoint` writes with their deploy checkpoints
    (``.pth`` or ``.safetensors``). Without a checkpoint the weights are
    random. Returns the model in eval mode.
    """
    cfg = as_config(config, cfg_options)
    model = build_model(cfg, 'cpu')
    if checkpoint is not None:
        # trust_checkpoint in the config (or --trust-checkpoint) holds for
        # this load only
        load_weights(model, checkpoint,
                     trust=bool(cfg.get('trust_checkpoint', False)))
    return model.to(device).eval()


def load_weights(model: nn.Module, checkpoint: str,
                 trust: bool = False) -> nn.Module:
    """Load a checkpoint file strictly into ``model`` through the safe
    loader (``trust``: unpickle it fully, for this load only)."""
    with trusted_checkpoints(trust):
        raw = load_checkpoint_file(checkpoint)
    load_state_dict_strict(model, extract_state_dict(raw, checkpoint),
                           source=checkpoint, hint=mismatch_hint)
    return model


def is_segmentor(model: nn.Module) -> bool:
    return hasattr(model, 'decode_head') and hasattr(model, 'extract_feat')


class LogitsModule(nn.Module):
    """The test-mode whole-image forward whose output is the logits.

    For a segmentor: ``model(x, mode='tensor')`` (backbone, neck, decode
    head; no auxiliary head, no sliding window) and the bilinear resize of
    the logits to the input size, which is what mmseg's ``encode_decode``
    computes for an unpadded input. For a classifier (anything else): the
    output of ``model(x, mode='tensor')`` (or ``model(x)`` for a plain
    module).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.segmentor = is_segmentor(model)
        head = getattr(model, 'decode_head', None)
        self.align_corners = bool(getattr(head, 'align_corners', False))

    # nn.Module.to/cuda/cpu reach the inner model through _apply only,
    # which moves its weights but not mmengine's record of the device
    # (BaseModel.to sets it): its data preprocessor would send images to
    # the old device, to meet mean/std on the new one. Delegating keeps it
    # in step.
    def to(self, *args, **kwargs):
        if isinstance(self.model, BaseModel):
            self.model.to(*args, **kwargs)
        return super().to(*args, **kwargs)

    def cuda(self, device=None):
        if isinstance(self.model, BaseModel):
            self.model.cuda(device)
        return super().cuda(device)

    def cpu(self):
        if isinstance(self.model, BaseModel):
            self.model.cpu()
        return super().cpu()

    @property
    def device(self) -> torch.device:
        """Where the weights are (CPU for a model without any)."""
        param = next(self.parameters(), None)
        return param.device if param is not None else torch.device('cpu')

    def forward(self, x):
        if isinstance(self.model, BaseModel):
            out = self.model(x, mode='tensor')
        else:
            out = self.model(x)
        if isinstance(out, (list, tuple)):
            out = out[-1]
        if self.segmentor:
            out = F.interpolate(out, size=x.shape[-2:], mode='bilinear',
                                align_corners=self.align_corners)
        return out


def default_input_shape(model: nn.Module) -> Tuple[int, int]:
    """713x713 (the paper's Cityscapes setting) for a segmentor, 224x224 for
    a classifier."""
    return (713, 713) if is_segmentor(model) else (224, 224)


# The backbones downsample by 32: a smaller input fails deep inside a conv.
MIN_INPUT_SIZE = 32


def checked_shape(shape: Optional[Sequence[int]],
                  default: Tuple[int, int]) -> Tuple[int, int]:
    """``shape`` (``--shape H W``) as an (H, W) tuple, or ``default``."""
    if not shape:
        return default
    if len(shape) != 2:
        raise InputError(f'an input shape is H W, got {list(shape)}')
    h, w = (int(v) for v in shape)
    if min(h, w) < MIN_INPUT_SIZE:
        raise InputError(f'input shape {h}x{w} is too small: height and '
                         f'width must be at least {MIN_INPUT_SIZE} (the '
                         'backbone downsamples by 32)')
    return h, w
