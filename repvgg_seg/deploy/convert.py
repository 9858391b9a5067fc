"""Deploy checkpoints: a trained checkpoint fused, checked and written with
the deploy config that rebuilds it.

:func:`convert_checkpoint` turns a trained checkpoint into a deploy
checkpoint with the library's one fusion
(:func:`repvgg_seg.models.convert.fuse_for_deploy`) and writes the matching
deploy config next to it, in stages a caller can run one by one
(:func:`load_trained`, :func:`fuse`, :func:`check_fused`,
:func:`write_deploy`; options in :class:`ConvertOptions`): the INT8 hard
case (:func:`repvgg_seg.quantization.outliers.convert_with_outliers`)
changes the fused model between them.

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
from dataclasses import dataclass, field, replace
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.registry import MODELS, DefaultScope

from ..apis.build import (DEPLOY_KEY, LogitsModule, build_model,
                          checked_shape, is_deploy_config, is_segmentor,
                          load_model)
from ..config import as_config
from ..errors import ConfigError, ConversionError, check_choice
from ..io.checkpoint import load_checkpoint_file, trusted_checkpoints
from ..io.files import check_writable, staged_outputs, write_bytes
from ..io.state_dict import extract_state_dict, load_state_dict_strict
from ..models.convert import compare_outputs, fuse_for_deploy
from ..models.describe import mismatch_hint
from ..models.fused import FUSED_TYPE, scoped_type

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
# conversion: the stages of convert_checkpoint


@dataclass
class ConvertOptions:
    """How :func:`convert_checkpoint` converts (``tools/convert.py``'s
    options).

    ``fmt``: ``pth`` (``{'state_dict', 'meta'}``) or ``safetensors`` (flat
    tensors, the meta as JSON metadata); default from the suffix of the
    output. ``force``: overwrite existing outputs. ``cfg_options``: applied
    to the config. ``shape``: the check input's size (default 256x256 for a
    segmentor, 224x224 for a classifier), a random input drawn with
    ``seed``. ``tolerance``: the largest relative logit difference
    accepted (relative to the largest logit), fused and reloaded alike.
    """
    fmt: Optional[str] = None
    force: bool = False
    cfg_options: Optional[dict] = None
    shape: Optional[Sequence[int]] = None
    tolerance: float = 1e-4
    seed: int = 0


class DeployFiles(NamedTuple):
    """What a conversion writes: the deploy checkpoint in ``fmt`` and the
    deploy config."""
    checkpoint: str
    config: str
    fmt: str


@dataclass
class Conversion:
    """A conversion in progress, what each stage hands the next: the
    config, the model (fused after :func:`fuse`), what the deploy meta
    keeps of the source checkpoint's (its ``dataset_meta``), the check
    input and the logits on it (the original model's, then the fused
    model's), their difference, and ``meta``: entries recorded in the
    deploy checkpoint's meta besides the usual ones (e.g. outliers planted
    into the fused model)."""
    cfg: Config
    checkpoint: str
    model: nn.Module
    source_meta: dict = field(default_factory=dict)
    inputs: Optional[torch.Tensor] = None
    original: Optional[torch.Tensor] = None
    fused: Optional[torch.Tensor] = None
    diff: Optional[dict] = None
    meta: dict = field(default_factory=dict)

    @property
    def shape(self) -> Tuple[int, int]:
        return tuple(self.inputs.shape[2:])


def deploy_files(out: str, options: ConvertOptions) -> DeployFiles:
    """Stage 0: the files :func:`write_deploy` will write for ``out``
    (:func:`deploy_paths`), in a known format; existing ones are refused
    unless ``options.force``."""
    fmt = options.fmt or ('safetensors' if str(out).endswith('.safetensors')
                          else 'pth')
    check_choice('format', fmt, FORMATS)
    out_ckpt, out_cfg = deploy_paths(os.fspath(out))
    check_writable([out_ckpt, out_cfg], options.force)
    return DeployFiles(out_ckpt, out_cfg, fmt)


def load_trained(config: Union[str, Config], checkpoint: str,
                 options: ConvertOptions) -> Conversion:
    """Stage 1: the config's model with the trained checkpoint loaded
    strictly, the file read once (its ``dataset_meta`` kept for the deploy
    checkpoint). A deploy config is refused: convert with the training
    config."""
    cfg = as_config(config, options.cfg_options)
    if is_deploy_config(cfg):
        raise ConfigError(f'{cfg.filename} is already a deploy config; '
                          'convert with the training config')
    model = build_model(cfg)
    with trusted_checkpoints(bool(cfg.get('trust_checkpoint', False))):
        source = load_checkpoint_file(checkpoint)
    load_state_dict_strict(model, extract_state_dict(source, checkpoint),
                           source=checkpoint, hint=mismatch_hint)
    meta = source.get('meta') if isinstance(source, dict) else None
    kept = {key: meta[key] for key in ('dataset_meta', )
            if isinstance(meta, dict) and key in meta}
    return Conversion(cfg, checkpoint, model, kept)


@torch.no_grad()
def fuse(conversion: Conversion, options: ConvertOptions) -> Conversion:
    """Stage 2: the original model's logits on a random input of
    ``options.shape``, then the model fused in place
    (:func:`fuse_for_deploy`)."""
    model = conversion.model
    shape = checked_shape(
        options.shape, (256, 256) if is_segmentor(model) else (224, 224))
    gen = torch.Generator().manual_seed(options.seed)
    conversion.inputs = torch.randn((1, 3) + shape, generator=gen)
    conversion.original = LogitsModule(model)(conversion.inputs)
    fuse_for_deploy(model)
    return conversion


@torch.no_grad()
def check_fused(conversion: Conversion,
                options: ConvertOptions) -> Conversion:
    """Stage 3: the fused model's logits against the original's, within
    ``options.tolerance`` (:class:`ConversionError` otherwise)."""
    conversion.fused = LogitsModule(conversion.model)(conversion.inputs)
    diff = compare_outputs([conversion.original], [conversion.fused])
    conversion.diff = diff
    height, width = conversion.shape
    print_log(f'fused {conversion.checkpoint}: logits on a random '
              f'{height}x{width} input differ by {diff["max_rel_diff"]:.3g} '
              f'relative (max abs {diff["max_abs_diff"]:.3g})',
              logger='current')
    if diff['max_rel_diff'] > options.tolerance:
        raise ConversionError(
            f'the fused model differs from the original: max relative logit '
            f'difference {diff["max_rel_diff"]:.3g} > '
            f'{options.tolerance:g}; nothing was written')
    return conversion


def _deploy_meta(conversion: Conversion, files: DeployFiles) -> dict:
    """The deploy checkpoint's meta: where it came from, how it was
    checked, :attr:`Conversion.meta` and the source's ``dataset_meta``
    (where JSON can hold it: the safetensors metadata is JSON)."""
    meta = dict(
        deploy=True, fused=True,
        source_checkpoint=osp.abspath(conversion.checkpoint),
        source_config=str(getattr(conversion.cfg, 'filename', '') or ''),
        deploy_config=osp.basename(files.config),
        verify_shape=list(conversion.shape),
        max_rel_diff=float(conversion.diff['max_rel_diff']),
        torch_version=str(torch.__version__),
        converted_at=datetime.datetime.now().isoformat(timespec='seconds'),
        **conversion.meta)
    meta.update((key, value) for key, value in conversion.source_meta.items()
                if _jsonable(value))
    return meta


def write_deploy(conversion: Conversion, files: DeployFiles,
                 options: ConvertOptions) -> dict:
    """Stage 4: the deploy checkpoint and config written to temporary
    files, the model rebuilt from them and checked to give the fused
    logits (same tolerance), and only then renamed into place. Returns the
    report (paths, format, differences, the check's shape)."""
    meta = _deploy_meta(conversion, files)
    deploy_cfg = make_deploy_config(conversion.cfg, info=dict(
        source_checkpoint=meta['source_checkpoint'],
        source_config=meta['source_config']))
    state = {k: v.detach().cpu().contiguous()
             for k, v in conversion.model.state_dict().items()}
    with staged_outputs([files.checkpoint, files.config]) as staged:
        tmp_ckpt, tmp_cfg = staged[files.checkpoint], staged[files.config]
        write_bytes(_checkpoint_bytes(state, meta, files.fmt), tmp_ckpt,
                    files.checkpoint)
        write_bytes(_config_text(deploy_cfg, files.checkpoint).encode(),
                    tmp_cfg, files.config)
        # the round trip: the written files rebuild the same model
        reloaded = LogitsModule(load_model(tmp_cfg, tmp_ckpt))
        with torch.no_grad():
            again = reloaded(conversion.inputs)
        reload_diff = compare_outputs([conversion.fused], [again])
        if reload_diff['max_rel_diff'] > options.tolerance:
            raise ConversionError(
                'the written deploy checkpoint does not reproduce the fused '
                f'model: max relative difference '
                f'{reload_diff["max_rel_diff"]:.3g}; nothing was written')
    print_log(f'wrote {files.checkpoint} and {files.config}',
              logger='current')
    return dict(checkpoint=files.checkpoint, config=files.config,
                format=files.fmt,
                max_rel_diff=conversion.diff['max_rel_diff'],
                max_abs_diff=conversion.diff['max_abs_diff'],
                reload_max_rel_diff=reload_diff['max_rel_diff'],
                shape=conversion.shape)


def convert_checkpoint(config: Union[str, Config], checkpoint: str, out: str,
                       options: Optional[ConvertOptions] = None,
                       **fields) -> dict:
    """Convert a trained checkpoint to a deploy checkpoint and config: the
    stages :func:`deploy_files`, :func:`load_trained`, :func:`fuse`,
    :func:`check_fused` and :func:`write_deploy` (a caller may run them
    itself, changing the fused model between them).

    ``options`` (:class:`ConvertOptions`; ``fields``: keyword arguments of
    it, overriding). On any failure nothing is left behind. Returns
    :func:`write_deploy`'s report.
    """
    options = replace(options or ConvertOptions(), **fields)
    files = deploy_files(out, options)
    conversion = fuse(load_trained(config, checkpoint, options), options)
    check_fused(conversion, options)
    return write_deploy(conversion, files, options)


def _checkpoint_bytes(state: dict, meta: dict, fmt: str) -> bytes:
    """The serialized deploy checkpoint. In memory first (as mmengine does
    for its checkpoints): torch's file writer reports a failed write as an
    opaque RuntimeError, a plain file write as an OSError with the cause."""
    if fmt == 'safetensors':
        from safetensors.torch import save
        return save({k: v.contiguous().clone() for k, v in state.items()},
                    metadata={'format': 'pt',
                              'repvgg_seg_meta': json.dumps(meta)})
    buffer = io.BytesIO()
    torch.save({'state_dict': state, 'meta': meta}, buffer)
    return buffer.getvalue()


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
