"""What inference writes (:mod:`repvgg_seg.inference.outputs`): label
maps in the three formats and the overlay, byte for byte mmseg's."""
import numpy as np
import pytest


def test_label_ids_and_colours(tmp_path):
    """--save-pred labelid maps train ids to Cityscapes label ids with
    cityscapesscripts' table (road 0 -> 7, sidewalk 1 -> 8, car 13 -> 26);
    color uses the palette."""
    from repvgg_seg.inference.outputs import OutputWriter
    from mmseg.datasets import CityscapesDataset
    meta = dict(classes=CityscapesDataset.METAINFO['classes'],
                palette=CityscapesDataset.METAINFO['palette'])
    labels = np.array([[0, 1], [13, 18]], np.uint8)
    ids = OutputWriter(str(tmp_path), meta, save_pred='labelid')
    assert ids.label_map(labels).tolist() == [[7, 8], [26, 33]]
    colours = OutputWriter(str(tmp_path), meta, save_pred='color')
    bgr = colours.label_map(labels)
    assert bgr[0, 0].tolist() == [128, 64, 128][::-1]  # road
    assert bgr[1, 0].tolist() == [0, 0, 142][::-1]  # car


@pytest.mark.parametrize('opacity', [0.5, 0.8])
def test_fast_overlay_is_mmseg_visualizers(opacity):
    """The colour-table overlay equals mmseg's SegLocalVisualizer drawing
    to the byte (the labels include an ignore value, 255)."""
    from mmengine.structures import PixelData
    from mmseg.datasets import CityscapesDataset
    from mmseg.structures import SegDataSample
    from mmseg.visualization import SegLocalVisualizer

    from repvgg_seg.inference.outputs import OutputWriter
    meta = dict(classes=CityscapesDataset.METAINFO['classes'],
                palette=CityscapesDataset.METAINFO['palette'])
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
    labels = rng.integers(0, 19, (24, 40)).astype(np.uint8)
    labels[:3] = 255
    ours = OutputWriter('', meta, opacity=opacity).overlay(image, labels)
    visualizer = SegLocalVisualizer(name=f'check_{opacity}', alpha=opacity)
    visualizer.set_dataset_meta(meta['classes'], meta['palette'])
    sample = SegDataSample()
    sample.pred_sem_seg = PixelData(data=labels[None].astype(np.int64))
    visualizer.add_datasample('x', image[..., ::-1], sample, draw_gt=False,
                              with_labels=False)
    assert np.array_equal(ours, visualizer.get_image()[..., ::-1])



def test_unknown_formats_are_named_with_the_valid_ones(tmp_path):
    """A wrong overlay or label map format: one message naming the valid
    ones (errors.check_choice's wording)."""
    from repvgg_seg.errors import InputError
    from repvgg_seg.inference.outputs import OutputWriter
    meta = dict(classes=['road', 'car'], palette=[[0, 0, 0], [9, 9, 9]])
    with pytest.raises(InputError) as caught:
        OutputWriter(str(tmp_path), meta, vis_suffix='.gif')
    assert str(caught.value) == \
        "unknown overlay format '.gif'; valid: .jpg, .png"
    with pytest.raises(InputError) as caught:
        OutputWriter(str(tmp_path), meta, save_pred='ids')
    assert str(caught.value) == \
        "unknown --save-pred 'ids'; valid: trainid, labelid, color"
