"""repvgg-seg: RepVGG backbones for semantic segmentation on mmseg 1.x.

Importing the package registers the project's modules into mmsegmentation's
registries and makes mmengine read local checkpoints through the project's
safe loader (see :mod:`repvgg_seg.checkpoint`).
"""
from .checkpoint import (CheckpointError, UnsafeCheckpointError,
                         load_checkpoint_file, register_safe_loader,
                         set_trust_checkpoints)
from . import hooks  # noqa: F401 (registers the hooks)
from .engine import NonFiniteLossError, register_atomic_backend
from .models import (ARCH_SETTINGS, RepVGG, RepVGGBlock, deploy_copy,
                     fuse_for_deploy, reparameterize)

__version__ = '0.1.0'

register_safe_loader()
register_atomic_backend()

__all__ = ['ARCH_SETTINGS', 'RepVGG', 'RepVGGBlock', 'reparameterize',
           'fuse_for_deploy', 'deploy_copy', 'load_checkpoint_file',
           'set_trust_checkpoints', 'CheckpointError',
           'UnsafeCheckpointError', 'NonFiniteLossError']
