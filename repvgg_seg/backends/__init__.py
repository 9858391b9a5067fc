"""The inference runtimes besides PyTorch, as backends: onnxruntime
(:mod:`.onnxruntime`) and OpenVINO's CPU plugin (:mod:`.openvino`), each
with its sessions and runners; both are optional packages (the ``deploy``
extra). Used by export, quantization, the engines and the benchmark.
What every runner is (:class:`.base.Runner`) and the mmseg segmentor
whose logits a runner computes (:class:`.segmentor.EngineSegmentor`) live
here too, below everything that uses them."""
from ..errors import UnavailableError


def require(package: str, purpose: str) -> None:
    """Raise :class:`UnavailableError` naming the install command unless
    ``package`` (``onnxruntime``, ``openvino``, ``nncf``) can be imported."""
    try:
        __import__(package)
    except ImportError:
        raise UnavailableError(
            f'{purpose} needs {package}: {package} is not installed (pip '
            f"install -e '.[deploy]', or pip install {package})") from None
