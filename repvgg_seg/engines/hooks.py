"""The Runner hook of ``tools/test.py --engine``: evaluate on an engine
inside the config's own test loop (registered in mmengine's root
registry, so configs of every scope find it)."""
from dataclasses import replace
from typing import Optional

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

from ..training.state import bare_model
from .base import RunOptions
from .registry import get_engine
from .segmentor import attach_engine


@HOOKS.register_module()
class EngineHook(Hook):
    """Before testing, put the runner's model on ``engine``: an
    :class:`~repvgg_seg.backends.segmentor.EngineSegmentor` of it
    (:func:`repvgg_seg.engines.attach_engine`) takes its place, inside the
    runner's DDP or TTA wrapper if it has them.

    ``weights``: what the runner loaded (a checkpoint: the hook only fuses
    or converts the loaded model), or an ``.onnx``/``.xml`` file that
    replaces the network (the runner then loads nothing). Runs after the
    runner has loaded the checkpoint, so ``--engine fused`` evaluates
    exactly what ``tools/convert.py`` writes.
    """

    priority = 'VERY_HIGH'

    def __init__(self, engine: str = 'torch', weights: Optional[str] = None,
                 precision: str = 'fp32', streams: Optional[int] = None,
                 threads: Optional[int] = None, tune: bool = True):
        self.engine = engine
        self.weights = weights
        self.options = RunOptions(precision=precision, streams=streams,
                                  threads=threads, tune=tune)

    def before_test(self, runner) -> None:
        model = bare_model(runner)
        options = replace(self.options,
                          device=self.run_device(model))
        install_bare_model(runner, attach_engine(
            model, self.engine, self.weights, options, load=False))
        print_log(f'testing on the {self.engine} engine '
                  f'({options.precision} on {options.device}'
                  + (f', {self.weights}' if self.weights else '') + ')',
                  logger='current')

    def run_device(self, model) -> str:
        """The device the engine runs on: the one the Runner put the model
        on (``cuda:LOCAL_RANK`` under a launcher). An engine that runs on
        the CPU only (OpenVINO, Winograd) gets the model moved to the CPU,
        with its data preprocessor, so the test loop feeds it CPU
        inputs."""
        device = next(model.parameters()).device
        run_on = get_engine(self.engine).device_for(device)
        if run_on != str(device):
            print_log(f'the {self.engine} engine runs on the CPU: the model '
                      f'moves there from {device}', logger='current',
                      level=30)
            model.to(run_on)
        return run_on


def install_bare_model(runner, model) -> None:
    """Put ``model`` where the runner's bare model
    (:func:`~repvgg_seg.training.state.bare_model`) is: the runner's model
    itself, or the module of its DDP or TTA wrapper, whose ``test_step``
    (what the test loop calls) hands the data to their module."""
    from mmengine.model import BaseTTAModel, is_model_wrapper
    holder, name, inside = runner, 'model', runner.model
    if is_model_wrapper(inside):
        holder, name, inside = inside, 'module', inside.module
    if isinstance(inside, BaseTTAModel):
        holder, name = inside, 'module'
    setattr(holder, name, model)
