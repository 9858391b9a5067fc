"""An mmseg segmentor whose logits come from a runner.

mmseg's ``EncoderDecoder`` computes ``encode_decode(window, metas)`` -- the
logits of a window (or a whole image), resized to its size -- once per
window of its slide or whole inference. :class:`EngineSegmentor` is an
``EncoderDecoder`` that wraps a built segmentor and computes that one step
with a runner (``run(x) -> logits``: a :class:`.base.Runner`, an engine's
forward, any such function); every other step is the wrapped segmentor's
own: the data preprocessor, slide/whole inference, post-processing,
``predict``, ``test_step``. So mmseg's test loop, ``SegTTAModel`` (which
wraps it like any segmentor) and ``MMSegInferencer`` run it unchanged.

It is mmdeploy's ``End2EndModel`` for segmentation, a segmentor holding a
backend wrapper, with one difference: End2EndModel runs its backend on the
whole preprocessed batch, while this keeps mmseg's sliding window, so that
an exported model of the crop size serves images of any size, exactly as
mmseg's own test does.
"""
from typing import Callable, List, Optional

import torch
from mmseg.models.segmentors import BaseSegmentor, EncoderDecoder


def _wrapped(name: str) -> property:
    return property(lambda self: getattr(self.segmentor, name),
                    doc=f"The wrapped segmentor's ``{name}``.")


class EngineSegmentor(EncoderDecoder):
    """``segmentor`` (an mmseg ``EncoderDecoder``, built and loaded) with
    its ``encode_decode`` computed by ``runner`` (``x -> logits``; ``None``:
    the segmentor's own, exactly mmseg's).

    ``engine_info``: the engine's facts for reports (``info``);
    ``engine_forward``: the engine's forward where one makes the runners
    (:class:`repvgg_seg.engines.segmentor.EngineForward`: per window shape,
    its labels and concurrency for an inference job), else ``None``. The
    network's modules are the wrapped segmentor's (``decode_head`` ...);
    its features and losses are refused while a runner computes the
    logits, which are all a runner gives.
    """

    def __init__(self, segmentor: EncoderDecoder,
                 runner: Optional[Callable[[torch.Tensor],
                                           torch.Tensor]] = None,
                 info: Optional[dict] = None, engine_forward=None):
        # EncoderDecoder.__init__ builds a network from its configs; this
        # type wraps a built one, so only BaseModel's part (the data
        # preprocessor, shared with the segmentor) is set up
        BaseSegmentor.__init__(
            self, data_preprocessor=segmentor.data_preprocessor)
        self.segmentor = segmentor
        self.runner = runner
        self.engine_info = info if info is not None else {}
        self.engine_forward = engine_forward

    backbone = _wrapped('backbone')
    neck = _wrapped('neck')
    decode_head = _wrapped('decode_head')
    auxiliary_head = _wrapped('auxiliary_head')
    train_cfg = _wrapped('train_cfg')
    test_cfg = _wrapped('test_cfg')
    align_corners = _wrapped('align_corners')
    num_classes = _wrapped('num_classes')
    out_channels = _wrapped('out_channels')

    def encode_decode(self, inputs: torch.Tensor,
                      batch_img_metas: List[dict]) -> torch.Tensor:
        if self.runner is None:
            return self.segmentor.encode_decode(inputs, batch_img_metas)
        return self.runner(inputs)

    def _network_only(self, what: str):
        if self.runner is not None:
            raise NotImplementedError(
                f'{what}: an engine computes the logits (encode_decode) '
                'only; use the wrapped segmentor (.segmentor)')
        return getattr(self.segmentor, what)

    def extract_feat(self, inputs):
        return self._network_only('extract_feat')(inputs)

    def loss(self, inputs, data_samples):
        return self._network_only('loss')(inputs, data_samples)

    def _forward(self, inputs, data_samples=None):
        return self._network_only('_forward')(inputs, data_samples)
