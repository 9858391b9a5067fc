"""Which layers INT8 hurts most: the per-layer table of
``tools/quantize.py --sensitivity``."""
import sys
from typing import Optional, Sequence

from mmengine.utils import ProgressBar

from ..backends.openvino import openvino_infer
from .names import ConvNames
from .ptq import quantize_model


def layer_sensitivity(fp32_model, calibration, metric, names: ConvNames,
                      preset: str = 'performance',
                      keep_fp32: Sequence[str] = (),
                      nodes: Optional[Sequence[str]] = None) -> dict:
    """The held-out ``metric`` of the INT8 model with every layer
    quantized, and with each of ``nodes`` (OpenVINO conv nodes; default
    every exported layer) alone left in fp32 (besides ``keep_fp32``),
    sorted by what that gains. Ranked this way rather than by quantizing
    one layer at a time: the gain is what ``--keep-fp32 LAYER`` would give,
    errors of the other layers included (they compound along the chain),
    and it is how NNCF's accuracy control ranks the layers it reverts."""

    def score(nodes):
        quantized = quantize_model(fp32_model, calibration, preset,
                                   keep_fp32=list(keep_fp32) + nodes)
        return metric(openvino_infer(quantized, 'int8'))[0]

    fp32 = metric(openvino_infer(fp32_model))[0]
    all_int8 = score([])
    rows = []
    nodes = [n for n in (names.modules if nodes is None else nodes)
             if n not in keep_fp32]
    bar = ProgressBar(len(nodes), file=sys.stderr)
    for node in nodes:
        value = score([node])
        rows.append(dict(layer=names.layer(node), node=node,
                         metric_with_layer_fp32=round(value, 3),
                         gain=round(value - all_int8, 3)))
        bar.update()
    sys.stderr.write('\n')
    rows.sort(key=lambda r: -r['gain'])
    return dict(metric=metric.name, fp32=round(fp32, 3),
                all_int8=round(all_int8, 3), layers=rows)
