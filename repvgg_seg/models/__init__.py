"""The RepVGG backbone (:mod:`.repvgg`) with its blocks, archs and
dilations, the re-parameterization math, whole-model conversion and
pretrained-checkpoint formats."""
from .archs import ARCH_SETTINGS, PAPER_ARCHS
from .blocks import BLOCK_TYPES, QARepVGGBlock, RepVGGBlock
from .convert import deploy_copy, fuse_for_deploy, reparameterize
from .dilation import DILATION_MODES
from .fused import FUSED_TYPE, FusedModel
from .repvgg import RepVGG

__all__ = ['ARCH_SETTINGS', 'BLOCK_TYPES', 'DILATION_MODES', 'PAPER_ARCHS',
           'QARepVGGBlock', 'RepVGG', 'RepVGGBlock', 'reparameterize',
           'fuse_for_deploy', 'deploy_copy', 'FUSED_TYPE', 'FusedModel']
