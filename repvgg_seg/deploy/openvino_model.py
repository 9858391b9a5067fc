"""Evaluating an OpenVINO IR (fp32 or INT8) inside mmseg's test loop.

``tools/test.py CONFIG MODEL.xml --engine openvino`` runs the config's own
test loop -- its pipeline, data preprocessor, slide or whole inference,
post-processing and ``IoUMetric`` -- with the deployed model in place of
the PyTorch network: the mIoU it reports is the deployed model's.

The swap is one level down from the segmentor: mmseg's
``EncoderDecoder.slide_inference`` and ``whole_inference`` call
``encode_decode(window, metas)`` once per window (or image), and the IR
(:class:`repvgg_seg.deploy.build.LogitsModule`, exported) computes exactly
that: the logits resized to the window's size. So
:class:`OpenVINOEngineHook` replaces the runner model's ``encode_decode``
by one that runs the compiled IR; everything around it stays mmseg's.
"""
import os.path as osp
import types

import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

from ..errors import ConfigError, InputError
from ..training.state import bare_model
from .runtimes import openvino_compile, openvino_infer, openvino_io_shapes


def _shape_text(shape) -> str:
    return 'x'.join(str(d) if d >= 0 else '?' for d in shape)


class OpenVINOSegmentorRunner:
    """``encode_decode`` computed by a compiled IR, checked against the
    windows it is given (a static IR runs one input size)."""

    def __init__(self, ir: str, num_classes: int, mode: str):
        self.ir = ir
        self.mode = mode
        compiled = openvino_compile(ir, 'fp32')
        (self.input_shape,
         self.output_shape) = openvino_io_shapes(compiled)
        if len(self.output_shape) != 4 or len(self.input_shape) != 4:
            raise InputError(f'{ir} is not a segmentation model (input '
                             f'{_shape_text(self.input_shape)}, output '
                             f'{_shape_text(self.output_shape)})')
        channels = self.output_shape[1]
        if channels != num_classes:
            raise ConfigError(
                f'{ir} outputs {channels} classes but the config\'s model '
                f'has {num_classes} (decode_head.num_classes): an IR of '
                'another model? Test it with the config it was made from')
        self.run = openvino_infer(None, compiled=compiled)

    def check(self, x: torch.Tensor) -> None:
        expected = self.input_shape[2:]
        if all(e in (-1, d) for e, d in zip(expected, x.shape[2:])):
            return
        what = 'window' if self.mode == 'slide' else 'image'
        raise InputError(
            f'{self.ir} takes {_shape_text(expected)} inputs, but the test '
            f'loop gives it a {x.shape[2]}x{x.shape[3]} {what} ({self.mode} '
            'inference): quantize/export it with --shape '
            f'{x.shape[2]} {x.shape[3]}, or test with the config it was '
            'made for')

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        """The logits of a batch, one image at a time (the IR's batch is
        1 unless it was exported otherwise)."""
        outputs = []
        for x in inputs.split(1):
            self.check(x)
            outputs.append(self.run(x.float()).to(inputs.device))
        return torch.cat(outputs)


@HOOKS.register_module()
class OpenVINOEngineHook(Hook):
    """Run the test loop's model on an OpenVINO IR (``tools/test.py
    --engine openvino``): before testing, the runner model's
    ``encode_decode`` is replaced by the compiled IR (see the module
    docstring). The model keeps its data preprocessor, ``test_cfg`` and
    post-processing; its own weights are not used (the runner loads no
    checkpoint)."""

    priority = 'VERY_HIGH'

    def __init__(self, ir: str):
        self.ir = ir
        self.engine = None

    def before_test(self, runner) -> None:
        model = bare_model(runner)
        if not hasattr(model, 'encode_decode'):
            raise ConfigError('--engine openvino evaluates segmentors '
                              '(mmseg EncoderDecoder models)')
        if not osp.isfile(self.ir):
            raise FileNotFoundError(f'OpenVINO IR not found: {self.ir}')
        test_cfg = getattr(model, 'test_cfg', None) or {}
        self.engine = OpenVINOSegmentorRunner(
            self.ir, model.out_channels, test_cfg.get('mode', 'whole'))
        engine = self.engine

        def encode_decode(self, inputs, batch_img_metas):
            return engine(inputs)

        model.encode_decode = types.MethodType(encode_decode, model)
        print_log(f'testing the OpenVINO IR {self.ir} (input '
                  f'{_shape_text(engine.input_shape)}) in the test loop',
                  logger='current')
