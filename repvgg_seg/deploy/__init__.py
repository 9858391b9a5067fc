"""Deployment: models built for the tools (:mod:`.build`), deploy
checkpoints and configs (:mod:`.convert`), ONNX/OpenVINO export
(:mod:`.export`, :mod:`.runtimes`), checks against torch (:mod:`.verify`),
the images models are calibrated and checked on (:mod:`.inputs`) and their
held-out metrics (:mod:`.metrics`), INT8 quantization (:mod:`.quantize`,
with cross-layer equalization :mod:`.equalize` over the channel graph
:mod:`.channels`, the planted hard case :mod:`.outliers`, and the layer
names across torch/ONNX/OpenVINO :mod:`.names`), the opt-in Winograd engine
(:mod:`.winograd`) and the hook old deploy configs name (:mod:`.hooks`).
The engines that run deployed models are :mod:`repvgg_seg.engines`.
"""
from .build import (LogitsModule, build_model, checked_shape, is_deploy_config,
                    is_segmentor, load_model, load_weights)
from .convert import ConversionError, convert_checkpoint, make_deploy_config
from .hooks import DeployFuseHook
from .quantize import QuantizationError, quantize_segmentor

__all__ = [
    'LogitsModule', 'build_model', 'checked_shape', 'is_deploy_config',
    'is_segmentor', 'load_model', 'load_weights', 'ConversionError',
    'convert_checkpoint', 'make_deploy_config', 'DeployFuseHook',
    'QuantizationError', 'quantize_segmentor'
]
