"""The hooks that fuse a model inside an mmengine Runner.

Both are registered in mmengine's root registry, so configs of every scope
(mmseg, mmpretrain) find them; the fusion itself is
:func:`repvgg_seg.models.convert.fuse_for_deploy`.
"""
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

from .engine import bare_model
from .models.convert import fuse_for_deploy


def fuse_runner_model(runner, reason: str) -> None:
    """Fuse the runner's model (inside a DDP wrapper if there is one)."""
    fuse_for_deploy(bare_model(runner))
    print_log(f'model fused for deployment (RepVGG blocks re-parameterized, '
              f'conv+BN folded) {reason}', logger='current')


@HOOKS.register_module()
class FuseModelHook(Hook):
    """Fuse a trained model right before testing (``tools/test.py --fuse``).

    Runs after the runner has loaded the training checkpoint, so the test
    evaluates exactly what ``tools/convert.py`` would write.
    """

    priority = 'VERY_HIGH'

    def before_test(self, runner) -> None:
        fuse_runner_model(runner, 'after loading the checkpoint')


@HOOKS.register_module()
class DeployFuseHook(Hook):
    """Fuse the model *before* the runner loads a deploy checkpoint.

    Added to a deploy config by :func:`repvgg_seg.deploy.make_deploy_config`.
    ``before_run`` runs before ``Runner.load_or_resume`` in ``test()``,
    ``val()`` and ``train()``.
    """

    priority = 'VERY_HIGH'

    def before_run(self, runner) -> None:
        fuse_runner_model(runner, 'before loading the deploy checkpoint')
