"""Deployment: model building for the tools, checkpoint conversion.

Everything the deployment tools (``tools/convert.py``, ``tools/benchmark.py``,
``tools/get_flops.py``, ``tools/export_onnx.py``) need to turn a config (and a
checkpoint) into a model lives here, so that tests and notebooks do exactly
what the command lines do:

* :func:`build_model` builds any config's model (an mmseg segmentor, an
  mmpretrain classifier, ...) through the config's own ``default_scope``, with
  SyncBN reverted to BN (nothing here is distributed) and no pretrained
  initialization (the weights are random unless a checkpoint is loaded).
* :func:`load_model` builds a config's model and loads a checkpoint into it
  (strictly), for training configs and for the deploy configs written by
  :func:`convert_checkpoint` alike.
* :func:`convert_checkpoint` turns a trained checkpoint into a deploy
  checkpoint with the library's one fusion
  (:func:`repvgg_seg.models.convert.fuse_for_deploy`) and writes the matching
  deploy config next to it.
* :class:`LogitsModule` is the "what is timed / exported" forward: a
  segmentor's whole-image test-mode forward plus the resize of its logits to
  the input size (a classifier's logits as they are).

The deploy config
-----------------
A deploy config is the original config with:

* ``model.backbone.deploy = True`` (when the backbone has a ``deploy``
  argument; RepVGG's blocks are then built as single 3x3 convs) and
  ``model.backbone.init_cfg = None`` (the weights come from the deploy
  checkpoint);
* ``deploy = dict(fused=True, ...)``: the flag that makes :func:`load_model`
  call :func:`fuse_for_deploy` on the freshly built model *before* loading the
  state dict. The fusion also folds the conv+BN pairs of the heads (and of
  non-RepVGG backbones), which no config argument can express; fusing a fresh
  model gives exactly the structure the converted state dict was taken from;
* a ``DeployFuseHook`` in ``custom_hooks`` (registered by the
  ``custom_imports`` it adds), which does the same inside an mmengine Runner
  (``tools/test.py DEPLOY_CONFIG DEPLOY_CHECKPOINT``): it fuses the model in
  ``before_run``, i.e. before the runner loads the checkpoint.
"""
import copy
import datetime
import inspect
import io
import json
import os
import os.path as osp
import warnings
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.logging import print_log

from .checkpoint import CheckpointError, load_checkpoint_file
from .hooks import DeployFuseHook  # noqa: F401 (its home before)
from .fileio import check_writable, staged_outputs, write_bytes
from .models.convert import compare_outputs, fuse_for_deploy
from .runner import ConfigError, load_config

#: top-level key of a deploy config (see the module docstring)
DEPLOY_KEY = 'deploy'
#: the checkpoint formats :func:`convert_checkpoint` writes
FORMATS = ('pth', 'safetensors')


class ConversionError(ValueError):
    """A conversion whose result does not match the original model."""


# --------------------------------------------------------------------------
# building and loading


def _as_config(config: Union[str, Config, dict],
               cfg_options: Optional[dict] = None) -> Config:
    if isinstance(config, (str, os.PathLike)):
        return load_config(os.fspath(config), cfg_options)
    cfg = copy.deepcopy(config if isinstance(config, Config)
                        else Config(config))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


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
    import repvgg_seg  # noqa: F401  (registers RepVGG in mmseg)
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import MODELS, DefaultScope
    cfg = _as_config(config, cfg_options)
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


def extract_state_dict(checkpoint) -> dict:
    """The model state dict of a loaded checkpoint (mmengine's
    ``{'state_dict': ...}``, ``{'model': ...}`` or a bare state dict),
    without a DataParallel ``module.`` prefix."""
    if not isinstance(checkpoint, dict):
        raise CheckpointError('the checkpoint is not a dict of tensors')
    state = checkpoint
    for key in ('state_dict', 'model'):
        if isinstance(checkpoint.get(key), dict):
            state = checkpoint[key]
            break
    if state and all(k.startswith('module.') for k in state):
        state = {k[len('module.'):]: v for k, v in state.items()}
    return state


def load_state_dict_strict(model: nn.Module, state: dict,
                           source: str = 'checkpoint') -> None:
    """``load_state_dict(strict=True)`` with a readable error."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and
              tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shapes:
        def _few(keys):
            return ', '.join(keys[:4]) + (' ...' if len(keys) > 4 else '')
        parts = []
        if missing:
            parts.append(f'{len(missing)} missing keys ({_few(missing)})')
        if unexpected:
            parts.append(f'{len(unexpected)} unexpected keys '
                         f'({_few(unexpected)})')
        if shapes:
            parts.append(f'{len(shapes)} shape mismatches ({_few(shapes)})')
        hint = ''
        if any('rbr_reparam' in k for k in unexpected):
            hint = ('; it looks like a deploy checkpoint: use the deploy '
                    'config written next to it by tools/convert.py')
        elif any('rbr_dense' in k for k in unexpected):
            hint = ('; it looks like a training checkpoint: use the '
                    'training config, not a deploy config')
        raise CheckpointError(f'{source} does not fit the model: '
                              + '; '.join(parts) + hint)
    model.load_state_dict(state, strict=True)


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
    model = build_model(config, 'cpu', cfg_options)
    if checkpoint is not None:
        state = extract_state_dict(load_checkpoint_file(checkpoint))
        load_state_dict_strict(model, state, source=checkpoint)
    return model.to(device).eval()


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

    def forward(self, x):
        from mmengine.model import BaseModel
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
        raise ValueError(f'an input shape is H W, got {list(shape)}')
    h, w = (int(v) for v in shape)
    if min(h, w) < MIN_INPUT_SIZE:
        raise ValueError(f'input shape {h}x{w} is too small: height and '
                         f'width must be at least {MIN_INPUT_SIZE} (the '
                         'backbone downsamples by 32)')
    return h, w


# --------------------------------------------------------------------------
# the deploy config


def _backbone_accepts_deploy(cfg: Config) -> bool:
    """Whether the config's backbone class takes a ``deploy`` argument."""
    backbone = cfg.model.get('backbone')
    if not isinstance(backbone, dict) or 'type' not in backbone:
        return False
    if 'deploy' in backbone:
        return True
    from mmengine.registry import MODELS, DefaultScope
    scope = cfg.get('default_scope', 'mmseg')
    btype = backbone['type']
    with DefaultScope.overwrite_default_scope(scope), \
            MODELS.switch_scope_and_registry(scope) as registry:
        cls = btype if inspect.isclass(btype) else registry.get(btype)
    if cls is None:
        return False
    return 'deploy' in inspect.signature(cls.__init__).parameters


def make_deploy_config(cfg: Config, info: Optional[dict] = None) -> Config:
    """The deploy config of ``cfg`` (see the module docstring)."""
    cfg = copy.deepcopy(cfg)
    backbone = cfg.model.get('backbone')
    if isinstance(backbone, dict):
        if _backbone_accepts_deploy(cfg):
            backbone['deploy'] = True
        if 'init_cfg' in backbone:
            backbone['init_cfg'] = None
    if 'pretrained' in cfg.model:
        cfg.model['pretrained'] = None
    cfg[DEPLOY_KEY] = dict(fused=True, **(info or {}))
    imports = cfg.get('custom_imports', dict(imports=[]))
    names = list(imports.get('imports', []))
    if 'repvgg_seg.deploy' not in names:
        names.append('repvgg_seg.deploy')
    cfg['custom_imports'] = dict(imports=names, allow_failed_imports=False)
    hooks = [h for h in cfg.get('custom_hooks', [])
             if h.get('type') != 'DeployFuseHook']
    cfg['custom_hooks'] = hooks + [dict(type='DeployFuseHook')]
    cfg.pop('load_from', None)
    return cfg


def deploy_paths(out: str) -> Tuple[str, str]:
    """``(checkpoint, config)`` written for ``out``: ``x.pth`` gets
    ``x_deploy.py`` (``x_deploy.pth`` gets ``x_deploy.py``)."""
    stem = osp.splitext(out)[0]
    if not stem.endswith('_deploy'):
        stem += '_deploy'
    return out, stem + '.py'


# --------------------------------------------------------------------------
# conversion


def _random_input(shape, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen)


def _checkpoint_bytes(state: dict, meta: dict, fmt: str) -> bytes:
    """The serialized deploy checkpoint. In memory first (as mmengine does
    for its checkpoints): torch's file writer reports a failed write as an
    opaque RuntimeError, a plain file write as an OSError with the cause."""
    if fmt == 'pth':
        buffer = io.BytesIO()
        torch.save({'state_dict': state, 'meta': meta}, buffer)
        return buffer.getvalue()
    if fmt == 'safetensors':
        from safetensors.torch import save
        return save({k: v.contiguous().clone() for k, v in state.items()},
                    metadata={'format': 'pt',
                              'repvgg_seg_meta': json.dumps(meta)})
    raise ValueError(f'unknown format {fmt!r}; valid: {", ".join(FORMATS)}')


def convert_checkpoint(config: Union[str, Config],
                       checkpoint: str,
                       out: str,
                       fmt: Optional[str] = None,
                       force: bool = False,
                       cfg_options: Optional[dict] = None,
                       shape: Optional[Tuple[int, int]] = None,
                       tolerance: float = 1e-4,
                       seed: int = 0) -> dict:
    """Convert a trained checkpoint to a deploy checkpoint and config.

    1. builds the config's model and loads ``checkpoint`` strictly;
    2. fuses it with :func:`fuse_for_deploy` and checks on a random input of
       ``shape`` (default 256x256 for a segmentor, 224x224 for a classifier)
       that the logits match the original within ``tolerance`` (relative to
       the largest logit);
    3. writes the state dict (``pth``: ``{'state_dict', 'meta'}``;
       ``safetensors``: flat tensors, the meta as JSON metadata) and the
       deploy config (:func:`deploy_paths`) to temporary files, rebuilds the
       model from that config and checkpoint and checks it gives the fused
       logits (same tolerance), and only then renames them into place.

    Existing outputs are refused unless ``force``. On any failure nothing is
    left behind. Returns a report dict (paths, differences).
    """
    fmt = fmt or ('safetensors' if str(out).endswith('.safetensors')
                  else 'pth')
    if fmt not in FORMATS:
        raise ValueError(f'unknown format {fmt!r}; valid: '
                         f'{", ".join(FORMATS)}')
    out_ckpt, out_cfg = deploy_paths(os.fspath(out))
    check_writable([out_ckpt, out_cfg], force)

    cfg = _as_config(config, cfg_options)
    if is_deploy_config(cfg):
        raise ConfigError(f'{cfg.filename} is already a deploy config; '
                          'convert with the training config')
    model = load_model(cfg, checkpoint)
    shape = checked_shape(
        shape, (256, 256) if is_segmentor(model) else (224, 224))
    inputs = _random_input((1, 3) + shape, seed)
    logits_module = LogitsModule(model)
    with torch.no_grad():
        before = logits_module(inputs)
        fuse_for_deploy(model)
        after = logits_module(inputs)
    fused_diff = compare_outputs([before], [after])
    print_log(f'fused {checkpoint}: logits on a random {shape[0]}x{shape[1]} '
              f'input differ by {fused_diff["max_rel_diff"]:.3g} relative '
              f'(max abs {fused_diff["max_abs_diff"]:.3g})',
              logger='current')
    if fused_diff['max_rel_diff'] > tolerance:
        raise ConversionError(
            f'the fused model differs from the original: max relative logit '
            f'difference {fused_diff["max_rel_diff"]:.3g} > {tolerance:g}; '
            'nothing was written')

    source = load_checkpoint_file(checkpoint)
    meta = dict(
        deploy=True, fused=True,
        source_checkpoint=osp.abspath(checkpoint),
        source_config=str(getattr(cfg, 'filename', '') or ''),
        deploy_config=osp.basename(out_cfg),
        verify_shape=list(shape),
        max_rel_diff=float(fused_diff['max_rel_diff']),
        torch_version=str(torch.__version__),
        converted_at=datetime.datetime.now().isoformat(timespec='seconds'))
    src_meta = source.get('meta') if isinstance(source, dict) else None
    if isinstance(src_meta, dict) and 'dataset_meta' in src_meta:
        meta['dataset_meta'] = src_meta['dataset_meta']
    del source
    if 'dataset_meta' in meta and not _jsonable(meta['dataset_meta']):
        meta.pop('dataset_meta')  # the safetensors metadata is JSON

    deploy_cfg = make_deploy_config(cfg, info=dict(
        source_checkpoint=meta['source_checkpoint'],
        source_config=meta['source_config']))
    state = {k: v.detach().cpu().contiguous()
             for k, v in model.state_dict().items()}

    with staged_outputs([out_ckpt, out_cfg]) as staged:
        tmp_ckpt, tmp_cfg = staged[out_ckpt], staged[out_cfg]
        write_bytes(_checkpoint_bytes(state, meta, fmt), tmp_ckpt, out_ckpt)
        write_bytes(_config_text(deploy_cfg, out_ckpt).encode(), tmp_cfg,
                    out_cfg)
        # the round trip: the written files rebuild the same model
        reloaded = LogitsModule(load_model(tmp_cfg, tmp_ckpt))
        with torch.no_grad():
            again = reloaded(inputs)
        reload_diff = compare_outputs([after], [again])
        if reload_diff['max_rel_diff'] > tolerance:
            raise ConversionError(
                'the written deploy checkpoint does not reproduce the fused '
                f'model: max relative difference '
                f'{reload_diff["max_rel_diff"]:.3g}; nothing was written')
    print_log(f'wrote {out_ckpt} and {out_cfg}', logger='current')
    return dict(checkpoint=out_ckpt, config=out_cfg, format=fmt,
                max_rel_diff=fused_diff['max_rel_diff'],
                max_abs_diff=fused_diff['max_abs_diff'],
                reload_max_rel_diff=reload_diff['max_rel_diff'],
                shape=shape)


def _jsonable(value) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


def _config_text(cfg: Config, checkpoint: str) -> str:
    header = (
        '# Deploy config written by tools/convert.py (repvgg_seg).\n'
        f'# Weights: {osp.basename(checkpoint)} (fused: RepVGG blocks '
        're-parameterized, conv+BN folded).\n'
        '# `deploy.fused = True` makes repvgg_seg.deploy.load_model (and the\n'
        '# DeployFuseHook inside an mmengine Runner) fuse the freshly built\n'
        '# model before loading the state dict, so the structures match.\n')
    return header + cfg.pretty_text + '\n'


def read_checkpoint_meta(path: str) -> dict:
    """The ``meta`` of a deploy checkpoint (pth or safetensors)."""
    if path.endswith('.safetensors'):
        from safetensors import safe_open
        with safe_open(path, framework='pt') as f:
            text = (f.metadata() or {}).get('repvgg_seg_meta', '{}')
        return json.loads(text)
    ckpt = load_checkpoint_file(path)
    return dict(ckpt.get('meta', {})) if isinstance(ckpt, dict) else {}
