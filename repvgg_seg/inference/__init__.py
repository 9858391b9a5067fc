"""Inference on users' own images and videos, on every engine:
:class:`RepVGGSegInferencer` (mmseg's ``MMSegInferencer`` on
:mod:`repvgg_seg.engines`; :mod:`.inferencer`) and the job behind
``tools/infer.py`` (:mod:`.job`: inputs in :mod:`.sources`, outputs in
:mod:`.outputs`, the batches' pipeline in :mod:`.pipeline`, videos in
:mod:`.video`)."""
from .drawing import PRED_FORMATS
from .job import InferenceOptions, InferenceReport, run_inference

__all__ = ['InferenceOptions', 'InferenceReport', 'PRED_FORMATS',
           'RepVGGSegInferencer', 'run_inference']


def __getattr__(name):
    # mmseg.apis is imported only when the inferencer is asked for
    if name == 'RepVGGSegInferencer':
        from .inferencer import RepVGGSegInferencer
        return RepVGGSegInferencer
    raise AttributeError(name)
