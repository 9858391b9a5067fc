"""Modules made exportable to ONNX: PyTorch ops the exporter cannot write
for every input size, replaced by the same computation in ops it can."""
import torch
import torch.nn as nn


class ExportableAdaptiveAvgPool2d(nn.Module):
    """``nn.AdaptiveAvgPool2d`` as slices and means (ONNX-exportable for any,
    also dynamic, input size)."""

    def __init__(self, output_size):
        super().__init__()
        if isinstance(output_size, int):
            output_size = (output_size, output_size)
        self.output_size = tuple(output_size)

    @staticmethod
    def _bins(length, bins: int):
        return [((i * length) // bins, ((i + 1) * length + bins - 1) // bins)
                for i in range(bins)]

    def forward(self, x):
        height, width = x.shape[-2:]
        out_h, out_w = self.output_size
        out_h = height if out_h is None else out_h
        out_w = width if out_w is None else out_w
        rows = []
        for y0, y1 in self._bins(height, out_h):
            strip = x[:, :, y0:y1]
            rows.append(torch.cat(
                [strip[:, :, :, x0:x1].mean(dim=(2, 3), keepdim=True)
                 for x0, x1 in self._bins(width, out_w)], dim=3))
        return torch.cat(rows, dim=2)


def make_exportable(module: nn.Module) -> nn.Module:
    """Replace (in place) every adaptive average pool whose output is not
    1x1 by :class:`ExportableAdaptiveAvgPool2d`; returns the module."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.AdaptiveAvgPool2d):
            size = child.output_size
            size = (size, size) if isinstance(size, int) else tuple(size)
            if size != (1, 1):
                setattr(module, name, ExportableAdaptiveAvgPool2d(size))
        else:
            make_exportable(child)
    return module
