from .convert import deploy_copy, fuse_for_deploy, reparameterize
from .fused import FUSED_TYPE, FusedModel
from .repvgg import (ARCH_SETTINGS, BLOCK_TYPES, DILATION_MODES, PAPER_ARCHS,
                     QARepVGGBlock, RepVGG, RepVGGBlock)

__all__ = ['ARCH_SETTINGS', 'BLOCK_TYPES', 'DILATION_MODES', 'PAPER_ARCHS',
           'QARepVGGBlock', 'RepVGG', 'RepVGGBlock', 'reparameterize',
           'fuse_for_deploy', 'deploy_copy', 'FUSED_TYPE', 'FusedModel']
