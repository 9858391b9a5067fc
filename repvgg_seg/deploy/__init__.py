"""Deployment: models built for the tools (:mod:`.build`), deploy
checkpoints and configs (:mod:`.convert`), ONNX/OpenVINO export
(:mod:`.export`, :mod:`.runtimes`), checks against torch (:mod:`.verify`),
INT8 quantization (:mod:`.quantize`), the opt-in Winograd engine
(:mod:`.winograd`), the hooks that fuse a model inside an mmengine Runner
(:mod:`.hooks`) and the one that tests an OpenVINO IR in mmseg's test loop
(:mod:`.openvino_model`).

Deploy configs written by ``tools/convert.py`` import this package
(``custom_imports``) to register :class:`~.hooks.DeployFuseHook`.
"""
from .build import (LogitsModule, build_model, checked_shape,
                    is_deploy_config, is_segmentor, load_model)
from .convert import ConversionError, convert_checkpoint, make_deploy_config
from .hooks import DeployFuseHook, FuseModelHook, WinogradEngineHook
from .openvino_model import OpenVINOEngineHook
from .quantize import QuantizationError, quantize_segmentor

__all__ = [
    'LogitsModule', 'build_model', 'checked_shape', 'is_deploy_config',
    'is_segmentor', 'load_model', 'ConversionError', 'convert_checkpoint',
    'make_deploy_config', 'DeployFuseHook', 'FuseModelHook',
    'WinogradEngineHook', 'OpenVINOEngineHook', 'QuantizationError',
    'quantize_segmentor'
]
