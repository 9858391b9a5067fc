"""Engines: one interface for every way the project runs a segmentor.

An engine turns (config, weights) into a runner
(:class:`~repvgg_seg.backends.base.Runner`) that computes a segmentor's
``encode_decode`` for a batch: ``torch`` (the model as loaded), ``fused``
(re-parameterized), ``winograd`` (fused, NNPACK's Winograd convs),
``onnxruntime`` and ``openvino`` (fp32, bf16, fp16, INT8; from a
checkpoint, an ``.onnx`` file or an ``.xml`` IR). :mod:`.base` is the
interface, :mod:`.pytorch` and :mod:`.exported` the engines,
:mod:`.segmentor` the mmseg segmentor on an engine
(:class:`~repvgg_seg.backends.segmentor.EngineSegmentor`), :mod:`.hooks`
the Runner hook of ``tools/test.py --engine``, :mod:`.interleaved` the
interleaved timing the Winograd tuner and the benchmark share. Every
consumer -- the test loop, the benchmark, the inferencer, the demo -- goes
through here.
"""
from ..backends.segmentor import EngineSegmentor
from .base import DTYPES, Engine, RunOptions, weights_kind
from .hooks import EngineHook
from .registry import ENGINES, get_engine
from .segmentor import attach_engine, load_engine

__all__ = ['DTYPES', 'ENGINES', 'Engine', 'EngineHook', 'EngineSegmentor',
           'RunOptions', 'attach_engine', 'get_engine', 'load_engine',
           'weights_kind']
