"""Fixtures of the deploy tests: a demo segmentor's training checkpoint and
its conversion by tools/convert.py. Tiny models and inputs only (the demo
config at 64x64 and below), one intra-op thread."""
import pytest
import torch

from repvgg_seg.apis import build_model
from repvgg_seg.cli import run_cli

from tests.bench.conftest import one_thread  # noqa: F401 (autouse)
from tests.conftest import DEMO_CONFIG as DEMO
from tests.deploy.common import SMALL
from tests.helpers import load_tool, randomize_bn


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A demo segmentor with non-trivial BN statistics, saved as an mmengine
    training checkpoint."""
    folder = tmp_path_factory.mktemp('trained')
    model = build_model(DEMO)
    randomize_bn(model, seed=1)
    path = str(folder / 'train.pth')
    torch.save({'state_dict': model.state_dict(),
                'meta': {'dataset_meta': {'classes': ('road', 'car')}}}, path)
    return model, path


@pytest.fixture(scope='module')
def converted(trained, tmp_path_factory):
    """tools/convert.py on the demo checkpoint (pth)."""
    _, ckpt = trained
    out = str(tmp_path_factory.mktemp('converted') / 'demo.pth')
    assert run_cli(load_tool('convert').main, [DEMO, ckpt, out] + SMALL) == 0
    return out, out[:-len('.pth')] + '_deploy.py'
