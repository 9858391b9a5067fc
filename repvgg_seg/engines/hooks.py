"""The Runner hook of ``tools/test.py --engine``: evaluate on an engine
inside the config's own test loop (registered in mmengine's root
registry, so configs of every scope find it)."""
from typing import Optional

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

from ..training.state import bare_model
from .base import RunOptions
from .segmentor import attach_engine


@HOOKS.register_module()
class EngineHook(Hook):
    """Before testing, make the runner's model compute ``encode_decode``
    on ``engine`` (:func:`repvgg_seg.engines.attach_engine`).

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
        attach_engine(bare_model(runner), self.engine, self.weights,
                      self.options, load=False)
        print_log(f'testing on the {self.engine} engine '
                  f'({self.options.precision}'
                  + (f', {self.weights}' if self.weights else '') + ')',
                  logger='current')
