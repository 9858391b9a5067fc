"""Helpers shared by the tests."""
import contextlib
import logging
import socket
from collections import OrderedDict

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


def load_backbone(arch, path, **kwargs):
    """A RepVGG backbone (``out_indices=(4,)`` unless given) whose weights
    all come from the checkpoint at ``path`` through its ``init_cfg``, in
    eval mode. Built on the meta device: the strict load replaces every
    parameter and buffer, so no time goes into a random init."""
    from repvgg_seg.models import RepVGG
    kwargs.setdefault('out_indices', (4,))
    with torch.device('meta'):
        model = RepVGG(arch, init_cfg=dict(type='Pretrained',
                                           checkpoint=str(path)), **kwargs)
    model.to_empty(device='cpu')
    model.init_weights()
    return model.eval()


class _ListHandler(logging.Handler):

    def __init__(self):
        super().__init__(level=logging.NOTSET)
        self.records = []

    def emit(self, record):
        self.records.append(record)

    @property
    def messages(self):
        return [r.getMessage() for r in self.records]


@contextlib.contextmanager
def captured_log():
    """The records mmengine's current logger (what ``print_log(...,
    logger='current')`` writes to) receives within the block: a real
    handler on the real logger, so the level and message are what a user's
    log gets. Yields the handler (``.records``, ``.messages``)."""
    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    handler = _ListHandler()
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def free_port() -> int:
    """A TCP port free on this machine now (tests run in parallel, so no
    fixed port)."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def relative_error(reference, candidate) -> float:
    """max |reference - candidate| / max |reference| over all outputs."""
    if isinstance(reference, torch.Tensor):
        reference, candidate = [reference], [candidate]
    diff = max((r - c).abs().max().item() for r, c in zip(reference,
                                                          candidate))
    return diff / max(r.abs().max().item() for r in reference)


def load_tool(name):
    """``tools/<name>.py`` as a module (its ``main(argv)``)."""
    import importlib.util
    import os.path as osp
    repo = osp.dirname(osp.dirname(osp.abspath(__file__)))
    spec = importlib.util.spec_from_file_location(
        f'tool_{name}', osp.join(repo, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_tool(name, *args, capsys=None):
    """Run ``tools/<name>.py`` in-process as its ``__main__`` would (through
    ``run_cli``) and return ``(exit_code, stderr)``; avoids paying the
    multi-second import of torch/mmseg for each command-line test."""
    from mmengine.logging import MMLogger
    from mmengine.visualization import Visualizer

    from repvgg_seg.cli import run_cli

    # A fresh process would build its loggers and visualizer anew; loggers
    # kept from an earlier test write to that test's (closed) captured
    # stdout, and a kept visualizer saves to that test's folder.
    MMLogger._instance_dict.clear()
    classes = [Visualizer]
    while classes:  # every subclass keeps its own instances
        cls = classes.pop()
        cls._instance_dict.clear()
        classes += cls.__subclasses__()
    code = run_cli(load_tool(name).main, list(args))
    err = capsys.readouterr().err if capsys is not None else ''
    return code, err


def official_state(table: dict, seed: int = 0) -> OrderedDict:
    """A random checkpoint with exactly the key names and shapes of one
    table of ``official_checkpoint_keys.json``."""
    gen = torch.Generator().manual_seed(seed)
    state = OrderedDict()
    for key, shape in table.items():
        if key.endswith('num_batches_tracked'):
            state[key] = torch.tensor(100)
        elif key.endswith('running_var'):
            state[key] = torch.rand(shape, generator=gen) + 0.5
        else:
            state[key] = torch.randn(shape, generator=gen) * 0.1
    return state


def seg_batch(count: int = 2, size: int = 64, classes: int = 19,
              seed: int = 0) -> dict:
    """A random segmentation batch as a data loader gives it (uint8 images,
    ``SegDataSample`` labels), for one ``train_step``."""
    from mmengine.structures import PixelData

    from mmseg.structures import SegDataSample
    gen = torch.Generator().manual_seed(seed)
    return dict(
        inputs=[torch.randint(0, 256, (3, size, size), dtype=torch.uint8,
                              generator=gen) for _ in range(count)],
        data_samples=[SegDataSample(gt_sem_seg=PixelData(
            data=torch.randint(0, classes, (1, size, size), generator=gen)))
            for _ in range(count)])


#: The tiny RepVGG archs of the suite, by what each one is for (every
#: block kind appears in each: a stride-2 first block per stage, then
#: identity blocks where a stage has more than one)
TINY_ARCHS = {
    # the smallest: one block a stage
    'minimal': dict(num_blocks=(1, 1, 1, 1), width_factor=(0.25, ) * 4),
    # the test segmentor of conftest's TINY_CONFIG: one identity block
    'segmentor': dict(num_blocks=(1, 1, 2, 1), width_factor=(0.25, ) * 4),
    # identity blocks in two stages, wider last stages
    'two_identity_stages': dict(num_blocks=(1, 2, 2, 1),
                                width_factor=(0.25, 0.25, 0.5, 0.5)),
    # five stage-3 blocks: the 'fast' dilation's runs of dilated layers
    'dilated_runs': dict(num_blocks=(1, 2, 5, 1),
                         width_factor=(0.25, 0.25, 0.25, 0.5)),
    # wide enough for INT8 per-channel statistics
    'int8': dict(num_blocks=(2, 2, 2, 1), width_factor=(0.5, ) * 4),
}


#: Stage depths that cut a paper arch down for its numerics: each stage
#: keeps its stride-2 first block and an identity block and, the depths
#: before stage 4 being even, the official grouped layers (every second
#: one) fall on the same blocks of each stage as in the full arch and as in
#: timm's byobnet
REDUCED_DEPTHS = (2, 2, 2, 1)
#: The same with stage-3 blocks that 'fast' leaves undilated (it dilates
#: the last 4), for the dilation modes
DILATION_DEPTHS = (2, 2, 6, 1)


def reduced_arch(arch: str, num_blocks=REDUCED_DEPTHS) -> dict:
    """The paper arch ``arch`` (its widths, groups and SE) with
    ``num_blocks`` blocks, as a custom arch dict."""
    from repvgg_seg.models import ARCH_SETTINGS
    return dict(ARCH_SETTINGS[arch], num_blocks=num_blocks)


def assert_same_fused_geometry(model, other) -> None:
    """The fused convs (``rbr_reparam``) of two RepVGG backbones have the
    same stride, padding, dilation and groups, block by block."""
    assert len(model.blocks()) == len(other.blocks())
    for (name, a), (_, b) in zip(model.blocks(), other.blocks()):
        for attr in ('stride', 'padding', 'dilation', 'groups'):
            assert getattr(a.rbr_reparam, attr) == getattr(
                b.rbr_reparam, attr), (name, attr)


def error_report(err: str) -> str:
    """The ``error: ...`` report a tool ends with (its log lines go to
    stderr before it); fails the test when there is none."""
    assert err.startswith('error: ') or '\nerror: ' in err, err
    return err[err.index('error: '):] if err.startswith('error: ') \
        else err[err.index('\nerror: ') + 1:]


def error_line(err: str) -> str:
    """The one ``error:`` line of a tool's stderr (fails the test unless
    there is exactly one)."""
    lines = [line for line in err.splitlines() if line.startswith('error:')]
    assert len(lines) == 1, err
    return lines[0]
