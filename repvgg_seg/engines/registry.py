"""The engines by name."""
from typing import Dict

from ..errors import check_choice
from .base import Engine
from .exported import OnnxRuntimeEngine, OpenVINOEngine
from .pytorch import FusedTorchEngine, TorchEngine, WinogradEngine

#: every engine, in the order of the tools' ``--engine`` choices
ENGINES: Dict[str, Engine] = {
    engine.name: engine
    for engine in (TorchEngine(), FusedTorchEngine(), WinogradEngine(),
                   OnnxRuntimeEngine(), OpenVINOEngine())
}


def get_engine(name: str) -> Engine:
    """The engine called ``name`` (:class:`InputError` naming the valid
    ones otherwise)."""
    check_choice('engine', name, ENGINES)
    return ENGINES[name]
