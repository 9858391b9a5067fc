"""repvgg-seg: RepVGG backbones for semantic segmentation on mmseg 1.x.

Importing the package registers the project's modules into the OpenMMLab
registries (the ``RepVGG`` backbone in mmseg's ``MODELS``; the training and
deploy hooks and the resumable loop in mmengine's root registries), makes
mmengine read local checkpoints through the project's safe loader
(:mod:`repvgg_seg.io.checkpoint`) and write them atomically
(:mod:`repvgg_seg.training.backend`).

Layout: :mod:`.models` (backbone, re-parameterization, pretrained weights),
:mod:`.io` (safe checkpoints, atomic files, state dicts), :mod:`.training`
(crash-safe training), :mod:`.datasets`, :mod:`.apis` (models for every
tool), :mod:`.backends` (onnxruntime, OpenVINO), :mod:`.evaluation`
(windows, agreement, held-out metrics), :mod:`.deploy` (deploy checkpoints,
export), :mod:`.quantization` (INT8), :mod:`.engines` (every way a
segmentor runs), :mod:`.inference` (your own images and videos),
:mod:`.bench` (speed and complexity), and the plumbing of the tools:
:mod:`.config`, :mod:`.runs`, :mod:`.cli`, :mod:`.errors`.
"""
from .deploy import hooks as _deploy_hooks  # noqa: F401 (registers them)
from .engines import hooks as _engine_hooks  # noqa: F401 (EngineHook)
from .errors import (CheckpointError, ConfigError, RepVGGSegError,
                     UnsafeCheckpointError)
from .io.checkpoint import (load_checkpoint_file, register_safe_loader,
                            trusted_checkpoints)
from .models import (ARCH_SETTINGS, QARepVGGBlock, RepVGG, RepVGGBlock,
                     deploy_copy, fuse_for_deploy, reparameterize)
from .training import NonFiniteLossError, register_atomic_backend

__version__ = '0.2.0'

register_safe_loader()
register_atomic_backend()


def use_mmengine_defaults() -> None:
    """Undo what importing the package changed in mmengine for the whole
    process: local checkpoints are read by mmengine's own loader again
    (``torch.load`` as mmengine calls it, no allow-list) and files written
    by its plain local backend (not atomically). For code of your own that
    needs mmengine's behaviour; the project's tools do not call it."""
    from mmengine.fileio.backends import LocalBackend, register_backend
    from mmengine.runner.checkpoint import CheckpointLoader, load_from_local
    CheckpointLoader.register_scheme(prefixes='', force=True)(
        load_from_local)
    register_backend('local', LocalBackend, force=True, prefixes='')

__all__ = [
    'ARCH_SETTINGS', 'RepVGG', 'RepVGGBlock', 'QARepVGGBlock',
    'reparameterize',
    'fuse_for_deploy', 'deploy_copy', 'load_checkpoint_file',
    'trusted_checkpoints', 'RepVGGSegError', 'ConfigError',
    'CheckpointError', 'UnsafeCheckpointError', 'NonFiniteLossError',
    'use_mmengine_defaults'
]
