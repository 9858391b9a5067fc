"""The inferencer's class names and palette when the weights carry none."""
import pytest
from mmengine.config import Config

from repvgg_seg.inference.inferencer import dataset_meta


@pytest.mark.parametrize('wrapped', [False, True])
def test_class_names_come_from_the_test_set_inside_its_wrappers(wrapped):
    """A test set wrapped in a RepeatDataset names its classes as the
    unwrapped one does (ADE20K's 150 here, not the Cityscapes fallback)."""
    ade = dict(type='ADE20KDataset', pipeline=[])
    dataset = dict(type='RepeatDataset', times=2, dataset=ade) if wrapped \
        else ade
    meta = dataset_meta(Config(dict(test_dataloader=dict(dataset=dataset))),
                        None)
    assert len(meta['classes']) == 150 and meta['classes'][0] == 'wall'
    assert len(meta['palette']) == 150


def test_a_configs_own_metainfo_names_the_classes():
    dataset = dict(type='CityscapesDataset', pipeline=[],
                   metainfo=dict(classes=('road', 'car'),
                                 palette=[[1, 2, 3], [4, 5, 6]]))
    meta = dataset_meta(Config(dict(test_dataloader=dict(dataset=dataset))),
                        None)
    assert meta == dict(classes=['road', 'car'],
                        palette=[[1, 2, 3], [4, 5, 6]])
