"""Deployment artefacts: fused deploy checkpoints and configs
(:mod:`.convert`), the checked ONNX/OpenVINO export (:mod:`.export`, with
the exportable forms of ops in :mod:`.ops`) and the hook old deploy configs
name (:mod:`.hooks`)."""
from .convert import (ConversionError, ConvertOptions, convert_checkpoint,
                      make_deploy_config)
from .hooks import DeployFuseHook

__all__ = [
    'ConversionError', 'ConvertOptions', 'convert_checkpoint',
    'make_deploy_config', 'DeployFuseHook'
]
