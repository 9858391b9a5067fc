"""Helpers of the deploy tests."""
import torch

from repvgg_seg.apis import LogitsModule

#: the check size of every conversion and export here
SMALL = ['--shape', '64', '64']


def logits(model, x):
    """The model's test-mode logits at the input size."""
    with torch.no_grad():
        return LogitsModule(model.eval())(x)
