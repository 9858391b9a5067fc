from .convert import deploy_copy, fuse_for_deploy, reparameterize
from .repvgg import (ARCH_SETTINGS, DILATION_MODES, PAPER_ARCHS, RepVGG,
                     RepVGGBlock)

__all__ = ['ARCH_SETTINGS', 'DILATION_MODES', 'PAPER_ARCHS', 'RepVGG',
           'RepVGGBlock', 'reparameterize', 'fuse_for_deploy', 'deploy_copy']
