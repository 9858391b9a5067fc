"""The hooks that fuse a model inside an mmengine Runner.

All are registered in mmengine's root registry, so configs of every scope
(mmseg, mmpretrain) find them; the fusion itself is
:func:`repvgg_seg.models.convert.fuse_for_deploy`, the Winograd engine
:func:`repvgg_seg.deploy.winograd.convert_to_winograd`.
"""
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

from ..errors import UnavailableError
from ..models.convert import fuse_for_deploy
from ..training.state import bare_model
from .winograd import convert_to_winograd


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

    Added to a deploy config by
    :func:`repvgg_seg.deploy.convert.make_deploy_config`.
    ``before_run`` runs before ``Runner.load_or_resume`` in ``test()``,
    ``val()`` and ``train()``.
    """

    priority = 'VERY_HIGH'

    def before_run(self, runner) -> None:
        fuse_runner_model(runner, 'before loading the deploy checkpoint')


@HOOKS.register_module()
class WinogradEngineHook(Hook):
    """Evaluate with the opt-in Winograd engine (``tools/test.py --engine
    winograd``): fuse the loaded model, then swap its stride-1 3x3 convs for
    NNPACK's Winograd kernels (checked against direct convolution).

    The engine computes the same function at any input size; only its
    per-layer plan (NNPACK or direct, whichever measured faster) is tuned for
    one shape: ``input_shape`` (H, W) if given, else the ``crop_size`` of a
    sliding-window ``test_cfg``, else the first test batch's size after
    preprocessing (whole-image inference). ``cache_file`` keeps the plan;
    ``tune=False`` puts every eligible conv on NNPACK without measuring.
    """

    priority = 'HIGH'  # after FuseModelHook

    def __init__(self, input_shape=None, cache_file=None, tune=True):
        self.input_shape = tuple(input_shape) if input_shape else None
        self.cache_file = cache_file
        self.tune = tune
        self.converted = False

    def before_test(self, runner) -> None:
        model = bare_model(runner)
        if any(p.is_cuda for p in model.parameters()):
            raise UnavailableError(
                '--engine winograd runs on the CPU (NNPACK); the model is on '
                'a GPU: run with CUDA_VISIBLE_DEVICES= to test on the CPU')
        fuse_for_deploy(model)  # a no-op for a fused (deploy) model
        self.converted = False

    def before_test_iter(self, runner, batch_idx, data_batch=None) -> None:
        if self.converted:
            return
        model = bare_model(runner)
        test_cfg = getattr(model, 'test_cfg', None) or {}
        if self.input_shape:
            shape = self.input_shape
        elif test_cfg.get('mode') == 'slide':
            shape = tuple(test_cfg['crop_size'])
        else:
            inputs = model.data_preprocessor(data_batch, False)['inputs']
            shape = tuple(inputs.shape[-2:])
        print_log(f'winograd engine: tuning the plan for {shape[0]}x'
                  f'{shape[1]} inputs', logger='current')
        convert_to_winograd(model, (1, 3) + tuple(shape), tune=self.tune,
                            cache_file=self.cache_file)
        self.converted = True
