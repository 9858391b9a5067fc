"""Deploy checkpoints: a trained checkpoint fused, checked and written with
the deploy config that rebuilds it.

:func:`convert_checkpoint` turns a trained checkpoint into a deploy
checkpoint with the library's one fusion
(:func:`repvgg_seg.models.convert.fuse_for_deploy`) and writes the matching
deploy config next to it.

The deploy config
-----------------
A deploy config is the original config with:

* ``model.type = 'FusedModel'`` and the original type in
  ``model.fused_type`` (:mod:`repvgg_seg.models.fused`): building it, in a
  Runner, ``mmseg.apis.init_model``, ``MMSegInferencer`` or a plain
  ``MODELS.build``, gives the fused structure, which the deploy checkpoint
  loads into strictly (the fusion also folds the heads' conv+BN pairs,
  which no config argument can express);
* ``model.backbone.deploy = True`` (when the backbone has a ``deploy``
  argument: RepVGG's blocks are then built as single 3x3 convs) and
  ``model.backbone.init_cfg = None`` (the weights come from the deploy
  checkpoint);
* ``deploy = dict(fused=True, ...)``: where it came from;
* ``custom_imports`` of ``repvgg_seg``, which registers ``FusedModel``.

Deploy configs of repvgg-seg 0.2 (no ``FusedModel``, a ``DeployFuseHook``
instead) still work: :func:`repvgg_seg.apis.build.load_model` and that
hook fuse their freshly built model before loading.
"""
import copy
import datetime
import inspect
import io
import json
import os
import os.path as osp
from typing import Optional, Tuple, Union

import torch
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.registry import MODELS, DefaultScope

from ..apis.build import (DEPLOY_KEY, LogitsModule, checked_shape,
                          is_deploy_config, is_segmentor, load_model)
from ..config import as_config
from ..errors import ConfigError, ConversionError, InputError
from ..io.checkpoint import load_checkpoint_file, trusted_checkpoints
from ..io.files import check_writable, staged_outputs, write_bytes
from ..models.convert import compare_outputs, fuse_for_deploy
from ..models.fused import FUSED_TYPE, scoped_type
from ..quantization.outliers import plant_outliers

#: the checkpoint formats :func:`convert_checkpoint` writes
FORMATS = ('pth', 'safetensors')


def _backbone_accepts_deploy(cfg: Config) -> bool:
    """Whether the config's backbone class takes a ``deploy`` argument."""
    backbone = cfg.model.get('backbone')
    if not isinstance(backbone, dict) or 'type' not in backbone:
        return False
    if 'deploy' in backbone:
        return True
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
    if cfg.model.get('type') != FUSED_TYPE:
        cfg.model['fused_type'] = scoped_type(
            cfg.model, cfg.get('default_scope', 'mmseg'))
        cfg.model['type'] = FUSED_TYPE
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
    names = [n for n in imports.get('imports', [])
             if n != 'repvgg_seg.deploy']
    if 'repvgg_seg' not in names:
        names.append('repvgg_seg')
    cfg['custom_imports'] = dict(imports=names, allow_failed_imports=False)
    hooks = [h for h in cfg.get('custom_hooks', [])
             if h.get('type') != 'DeployFuseHook']
    cfg['custom_hooks'] = hooks
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
    raise InputError(f'unknown format {fmt!r}; valid: {", ".join(FORMATS)}')


def convert_checkpoint(config: Union[str, Config],
                       checkpoint: str,
                       out: str,
                       fmt: Optional[str] = None,
                       force: bool = False,
                       cfg_options: Optional[dict] = None,
                       shape: Optional[Tuple[int, int]] = None,
                       tolerance: float = 1e-4,
                       seed: int = 0,
                       plant: Optional[dict] = None) -> dict:
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

    ``plant``: keyword arguments of
    :func:`repvgg_seg.quantization.outliers.plant_outliers` (``k``, ``pairs``,
    ``where`` ...): the fused model gets outlier channels that keep its
    fp32 function (the INT8 hard case; recorded in the meta).

    Existing outputs are refused unless ``force``. On any failure nothing is
    left behind. Returns a report dict (paths, differences).
    """
    fmt = fmt or ('safetensors' if str(out).endswith('.safetensors')
                  else 'pth')
    if fmt not in FORMATS:
        raise InputError(f'unknown format {fmt!r}; valid: '
                         f'{", ".join(FORMATS)}')
    out_ckpt, out_cfg = deploy_paths(os.fspath(out))
    check_writable([out_ckpt, out_cfg], force)

    cfg = as_config(config, cfg_options)
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
        planted = plant_outliers(model, **plant) if plant else None
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

    with trusted_checkpoints(bool(cfg.get('trust_checkpoint', False))):
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
    if planted:
        meta['planted_outliers'] = planted
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
                shape=shape, planted_outliers=planted)


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
        "# type='FusedModel' (registered by custom_imports=['repvgg_seg'])\n"
        '# builds the fused model wherever it is built (Runner, init_model,\n'
        '# MMSegInferencer), so the deploy checkpoint loads strictly.\n')
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
