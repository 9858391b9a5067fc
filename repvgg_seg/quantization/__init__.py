"""INT8 quantization of segmentors: the staged NNCF quantization of a
segmentor (:mod:`.quantize`, its options in :mod:`.options`, its images in
:mod:`.images`), NNCF on an exported model (:mod:`.ptq`), the per-layer
sensitivity table (:mod:`.sensitivity`), cross-layer equalization
(:mod:`.equalize`) over the channel graph (:mod:`.channels`, scaled by
:mod:`.scaling`), the planted hard case (:mod:`.outliers`) and layer names
across torch, ONNX and OpenVINO (:mod:`.names`)."""
from .options import QuantizeOptions
from .quantize import QuantizationError, quantize_segmentor

__all__ = ['QuantizationError', 'QuantizeOptions', 'quantize_segmentor']
