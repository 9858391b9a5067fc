"""mmseg segmentors on an engine: :func:`attach_engine` and
:func:`load_engine` make an
:class:`~repvgg_seg.backends.segmentor.EngineSegmentor` whose
``encode_decode`` is an :class:`EngineForward`.

mmseg's ``EncoderDecoder.slide_inference`` and ``whole_inference`` call
``encode_decode(window, metas)`` once per window (or image); an engine's
runner computes exactly that, the logits resized to the window's size
(:class:`repvgg_seg.apis.build.LogitsModule`, exported or not). So only
that step changes and everything around it -- the test pipeline, data
preprocessor, slide/whole inference, post-processing, ``IoUMetric``,
``SegTTAModel``, ``MMSegInferencer``'s visualisation -- stays mmseg's:
``tools/test.py --engine`` (:class:`~repvgg_seg.engines.hooks.EngineHook`),
``tools/infer.py`` and :class:`repvgg_seg.inference.RepVGGSegInferencer`
all use it.

The torch engines run the model itself (``fused`` after
:func:`repvgg_seg.fuse_for_deploy`). The others get a runner per window
shape: made from the model at the first window of a shape (Winograd's
plan is tuned for it; ONNX is exported at it) or, for an ``.onnx``/``.xml``
file, the file itself, whose static input shape every window must have.
"""
import os
import tempfile
import threading
from typing import Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.logging import print_log

from ..apis.build import LogitsModule, build_model, load_model, load_weights
from ..backends.base import Runner
from ..backends.segmentor import EngineSegmentor
from ..errors import ConfigError, InputError, UnavailableError
from ..models.convert import fuse_for_deploy
from .base import RunOptions
from .registry import ENGINES, get_engine


def _shape_text(shape) -> str:
    return 'x'.join(str(d) if d >= 0 else '?' for d in shape)


class PaddedRunner(Runner):
    """A static-shape file's runner for windows smaller than its input:
    each window zero-padded to the input size (bottom and right), its
    logits cropped back, as mmseg pads an image smaller than the crop."""

    def __init__(self, run: Runner):
        super().__init__(run.info, run.input_shape, run.output_shape)
        self.run = run
        self.concurrency = run.concurrency

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        expected = self.input_shape[2:]
        h, w = x.shape[2:]
        padded = F.pad(x, (0, max(expected[1], w) - w,
                           0, max(expected[0], h) - h))
        return self.run(padded)[:, :, :h, :w]


class EngineForward:
    """The ``encode_decode`` of a segmentor on an engine (see the module
    docstring); ``info`` collects the engine's facts."""

    def __init__(self, model: nn.Module, engine: str, weights: Optional[str],
                 kind: str, options: RunOptions):
        self.model = model
        self.engine = get_engine(engine)
        self.weights = weights
        self.kind = kind
        self.options = options
        self.mode = (getattr(model, 'test_cfg', None) or {}).get('mode',
                                                                  'whole')
        self.runners = {}
        self.info = dict(engine=engine, precision=options.precision,
                         weights=weights)
        self.folder = None
        self.padded = False
        self.lock = threading.Lock()
        if kind != 'checkpoint':
            run = self.engine.file_runner(weights, options)
            self._check_classes(run)
            self.file_run = run
            self.padded_run = PaddedRunner(run)
            self.info.update(run.info)

    def __deepcopy__(self, memo):
        # a copy of an engine segmentor shares its engine: the runners
        # hold compiled runtimes and a lock, which do not copy
        return self

    def _check_classes(self, run: Runner) -> None:
        out = run.output_shape
        classes = self.model.out_channels
        if out is not None and len(out) == 4 and out[1] not in (-1, classes):
            raise ConfigError(
                f'{self.weights} outputs {out[1]} classes but the config\'s '
                f'model has {classes} (decode_head.num_classes): a model of '
                'another config? Run it with the config it was made from')
        shape = run.input_shape
        if shape is not None and len(shape) != 4:
            raise InputError(f'{self.weights} is not a segmentation model '
                             f'(input {_shape_text(shape)})')

    def _check_shape(self, run: Runner, x: torch.Tensor) -> bool:
        """Whether ``x`` fits the file's static input shape as it is
        (``False``: a slide window smaller than it, to be padded)."""
        expected = (run.input_shape or [])[2:]
        if all(e in (-1, d) for e, d in zip(expected, x.shape[2:])):
            return True
        if self.mode == 'slide' and all(
                e == -1 or d <= e for e, d in zip(expected, x.shape[2:])):
            # an image smaller than the crop (e.g. a downscaled --tta view)
            # gives mmseg a smaller window: padded to the IR's size and its
            # logits cropped back, as mmseg pads images to the crop size
            if not self.padded:
                print_log(f'{self.weights}: windows smaller than its '
                          f'{_shape_text(expected)} input are padded to it',
                          logger='current')
            self.padded = True
            return False
        what = 'window' if self.mode == 'slide' else 'image'
        raise InputError(
            f'{self.weights} takes {_shape_text(expected)} inputs, but it is '
            f'given a {x.shape[2]}x{x.shape[3]} {what} ({self.mode} '
            'inference): quantize/export it with --shape '
            f'{x.shape[2]} {x.shape[3]}, or run it with the config it was '
            'made for')

    def runner_for(self, x: torch.Tensor) -> Runner:
        """The runner of windows of ``x``'s shape (made at the first one
        from a checkpoint)."""
        if self.kind != 'checkpoint':
            return (self.file_run if self._check_shape(self.file_run, x)
                    else self.padded_run)
        shape = tuple(x.shape[2:])
        run = self.runners.get(shape)
        if run is not None:
            return run
        with self.lock:  # an inference job's workers call at once
            return self._new_runner(shape)

    def _new_runner(self, shape):
        run = self.runners.get(shape) or (
            next(iter(self.runners.values()))
            if self.runners and self.engine.name == 'winograd' else None)
        if run is None:
            if self.folder is None:
                self.folder = tempfile.TemporaryDirectory(
                    prefix=f'repvgg_{self.engine.name}_')
            folder = os.path.join(self.folder.name, str(len(self.runners)))
            os.makedirs(folder)
            print_log(f'{self.engine.name} engine: preparing for '
                      f'{shape[0]}x{shape[1]} inputs', logger='current')
            module = LogitsModule(self.model).eval()
            run = self.engine.runner(module, (1, 3) + shape, self.options,
                                     folder)
            self.info.update(run.info)
        self.runners[shape] = run
        return run

    def labels(self, inputs: torch.Tensor) -> Optional[torch.Tensor]:
        """The argmax of ``encode_decode(inputs)`` over the classes
        (``N x H x W``) where the engine computes it in its graph
        (OpenVINO with ``RunOptions(labels=True)``), else None."""
        run = self.runner_for(inputs)
        if not run.has_labels:
            return None
        return run.labels(inputs).to(inputs.device)

    def concurrency(self) -> int:
        """How many calls the engine runs at once (its requests in flight:
        OpenVINO compiled for throughput), 1 before its first runner is
        made or where calls run one at a time."""
        runs = ([self.file_run] if self.kind != 'checkpoint'
                else list(self.runners.values()))
        return max([r.concurrency for r in runs] or [1])

    def __call__(self, inputs: torch.Tensor, batch_img_metas=None):
        run = self.runner_for(inputs)
        if self.engine.batches or inputs.shape[0] == 1:
            return run(inputs).to(inputs.device)
        return torch.cat([run(x) for x in inputs.split(1)]).to(inputs.device)


def attach_engine(model: nn.Module, engine: str = 'torch',
                  weights: Optional[str] = None,
                  options: Optional[RunOptions] = None,
                  load: bool = True) -> EngineSegmentor:
    """``model`` (an mmseg segmentor, built from its config; or an
    :class:`EngineSegmentor`, whose segmentor is taken) as an
    :class:`EngineSegmentor` computing ``encode_decode`` on ``engine``.

    ``weights``: a checkpoint (``.pth``/``.safetensors``, training or
    deploy; loaded strictly into ``model`` unless ``load`` is False, e.g.
    when a Runner loaded it), an ``.onnx`` file or an OpenVINO IR
    (``.xml``), whichever the engine takes. ``model`` is loaded and, for
    the engines that fuse, fused in place; the result wraps it.
    ``engine_info`` holds the engine's facts (INT8 conv counts ...),
    ``engine_forward`` the :class:`EngineForward` (``None`` for torch's
    own fp32 forward).
    """
    options = options or RunOptions()
    if isinstance(model, EngineSegmentor):
        model = model.segmentor
    kind = _checked_kind(model, engine, weights, options)
    if kind == 'checkpoint' and load and weights is not None:
        load_weights(model, weights)
    if ENGINES[engine].devices == ('cpu', ) and any(
            p.is_cuda for p in model.parameters()):
        raise UnavailableError(
            f'--engine {engine} runs on the CPU; the model is on a GPU: run '
            'with CUDA_VISIBLE_DEVICES= to use the CPU')
    if kind == 'checkpoint' and ENGINES[engine].fuses:
        fuse_for_deploy(model)
    model.eval()
    if engine in ('torch', 'fused') and options.precision == 'fp32' \
            and options.layout == 'nchw' and not options.compile:
        # the model's own encode_decode: exactly mmseg's
        return EngineSegmentor(model, info=dict(
            engine=engine, precision='fp32', weights=weights)).eval()
    forward = EngineForward(model, engine, weights, kind, options)
    return EngineSegmentor(model, forward, forward.info, forward).eval()


def _checked_kind(model: nn.Module, engine: str, weights: Optional[str],
                  options: RunOptions) -> str:
    """The kind of ``weights`` (see :func:`~.base.weights_kind`), once
    ``engine`` is known to run ``options`` here on a segmentor."""
    eng = get_engine(engine)
    why = eng.unsupported(options.precision, options.layout, options.device,
                          options.compile)
    if why:
        raise UnavailableError(why)
    eng.require()
    eng.require_precision(options.precision)
    if not hasattr(model, 'encode_decode'):
        raise ConfigError(f'--engine {engine} runs segmentors (mmseg '
                          'EncoderDecoder models)')
    return eng.check_weights(weights)


def load_engine(config: Union[str, Config], weights: Optional[str] = None,
                engine: str = 'torch',
                options: Optional[RunOptions] = None,
                cfg_options: Optional[dict] = None) -> EngineSegmentor:
    """The config's segmentor, its weights loaded (a checkpoint) or given to
    the engine (an exported file), as an :class:`EngineSegmentor` on
    ``engine`` (:func:`attach_engine`)."""
    kind = get_engine(engine).check_weights(weights)
    if kind == 'checkpoint':
        model = load_model(config, weights, cfg_options=cfg_options)
    else:
        model = build_model(config, cfg_options=cfg_options)
    return attach_engine(model, engine, weights, options, load=False)


__all__ = ['ENGINES', 'EngineForward', 'EngineSegmentor', 'PaddedRunner',
           'attach_engine', 'load_engine']
