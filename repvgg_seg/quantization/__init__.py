"""INT8 quantization of segmentors: NNCF on the exported model
(:mod:`.quantize`), cross-layer equalization (:mod:`.equalize`) over the
channel graph (:mod:`.channels`), the planted hard case (:mod:`.outliers`)
and layer names across torch, ONNX and OpenVINO (:mod:`.names`)."""
from .quantize import QuantizationError, quantize_segmentor

__all__ = ['QuantizationError', 'quantize_segmentor']
