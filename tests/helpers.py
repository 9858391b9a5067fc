"""Helpers shared by the tests."""
import torch


def randomize_bn(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics and affine parameters, so that a fusion
    bug cannot hide behind mean 0 / var 1 / weight 1 / bias 0."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=gen) * 1.5 + 0.25)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)


def relative_error(reference, candidate) -> float:
    """max |reference - candidate| / max |reference| over all outputs."""
    if isinstance(reference, torch.Tensor):
        reference, candidate = [reference], [candidate]
    diff = max((r - c).abs().max().item() for r, c in zip(reference,
                                                          candidate))
    return diff / max(r.abs().max().item() for r in reference)
