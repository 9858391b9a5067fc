import json
import os
import os.path as osp

import pytest
import torch

import repvgg_seg  # noqa: F401  (registers the project's modules)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
SHARED_KEYS = osp.join(REPO, '..', 'shared', 'reference',
                       'official_checkpoint_keys.json')
# A copy ships with the tests so they do not depend on the shared folder.
LOCAL_KEYS = osp.join(REPO, 'tests', 'data', 'official_checkpoint_keys.json')

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope='session')
def official_keys():
    """Key names and shapes of the official checkpoints, per arch."""
    path = LOCAL_KEYS if osp.exists(LOCAL_KEYS) else SHARED_KEYS
    with open(path) as f:
        return json.load(f)
