"""Deployment: models built for the tools (:mod:`.build`), deploy
checkpoints and configs (:mod:`.convert`), ONNX/OpenVINO export
(:mod:`.export`, :mod:`.runtimes`), checks against torch (:mod:`.verify`),
the opt-in Winograd engine (:mod:`.winograd`) and the hooks that fuse a
model inside an mmengine Runner (:mod:`.hooks`).

Deploy configs written by ``tools/convert.py`` import this package
(``custom_imports``) to register :class:`~.hooks.DeployFuseHook`.
"""
from .build import (LogitsModule, build_model, checked_shape,
                    is_deploy_config, is_segmentor, load_model)
from .convert import ConversionError, convert_checkpoint, make_deploy_config
from .hooks import DeployFuseHook, FuseModelHook, WinogradEngineHook

__all__ = [
    'LogitsModule', 'build_model', 'checked_shape', 'is_deploy_config',
    'is_segmentor', 'load_model', 'ConversionError', 'convert_checkpoint',
    'make_deploy_config', 'DeployFuseHook', 'FuseModelHook',
    'WinogradEngineHook'
]
