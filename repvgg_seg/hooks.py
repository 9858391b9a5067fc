"""mmengine hooks of the project."""
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

from mmseg.registry import HOOKS

from .models.convert import fuse_for_deploy


@HOOKS.register_module()
class FuseModelHook(Hook):
    """Fuse the model for deployment right before testing.

    Runs after the runner has loaded the checkpoint, so ``tools/test.py
    --fuse`` evaluates exactly what ``tools/convert.py`` would write.
    """

    priority = 'VERY_HIGH'

    def before_test(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) \
            else runner.model
        fuse_for_deploy(model)
        print_log('model fused for deployment (RepVGG blocks '
                  're-parameterized, conv+BN folded)', logger='current')
