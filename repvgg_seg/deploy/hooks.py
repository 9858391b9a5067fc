"""The hook that deploy configs of repvgg-seg 0.2 name.

Those configs describe the training structure and rely on
:class:`DeployFuseHook` to fuse the model before the Runner loads the
deploy checkpoint. Deploy configs written now build the fused model by
themselves (``type='FusedModel'``, :mod:`repvgg_seg.models.fused`) and name
no hook; this one stays so that the old files keep working.
"""
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

from ..models.convert import fuse_for_deploy
from ..training.state import bare_model


@HOOKS.register_module()
class DeployFuseHook(Hook):
    """Fuse the model *before* the runner loads a deploy checkpoint
    (``before_run`` runs before ``Runner.load_or_resume``); a no-op for a
    model that is fused already."""

    priority = 'VERY_HIGH'

    def before_run(self, runner) -> None:
        fuse_for_deploy(bare_model(runner))
        print_log('model fused for deployment before loading the deploy '
                  'checkpoint (a repvgg-seg 0.2 deploy config)',
                  logger='current')
