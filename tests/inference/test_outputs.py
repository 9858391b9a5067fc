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


@pytest.mark.parametrize('fmt', ['trainid', 'labelid', 'color'])
def test_label_maps_read_back_as_the_labels_written(fmt, tmp_path):
    """A label map written in each --save-pred format reads back as the
    train ids it was written from (a resumed video draws its overlay from
    them); a map of another format, or a value no class has, reads as
    none (the frame is segmented again)."""
    from mmseg.datasets import CityscapesDataset

    from repvgg_seg.inference.outputs import OutputWriter
    meta = dict(classes=CityscapesDataset.METAINFO['classes'],
                palette=CityscapesDataset.METAINFO['palette'])
    writer = OutputWriter(str(tmp_path), meta, save_pred=fmt)
    labels = (np.arange(6 * 7).reshape(6, 7) % 19).astype(np.uint8)
    assert writer.read_labels('scene/000000') is None  # not written yet
    path = writer.write_label_map('scene/000000', labels)
    assert path == str(tmp_path / 'pred' / 'scene' / '000000.png')
    back = writer.read_labels('scene/000000')
    assert back.dtype == np.uint8 and np.array_equal(back, labels)
    other = 'trainid' if fmt == 'color' else 'color'
    assert writer.labels_of_map(OutputWriter(
        str(tmp_path), meta, save_pred=other).label_map(labels)) is None
    if fmt != 'color':
        assert writer.labels_of_map(np.full((2, 2), 250, np.uint8)) is None


def test_a_rerun_removes_the_partial_files_of_its_outputs(tmp_path):
    """Temporary files a killed run left (io.files.temp_path's, and the
    .partial.tmp.mp4 of earlier versions) are removed for the outputs
    named, or for every output of the folder; others' are left."""
    from repvgg_seg.inference.outputs import remove_partials
    names = ['.photo.png.abcd_123.partial.jpg',
             '.photo.jpg.zz99zz99.partial.jpg', '.drive.k1ll3d_0.partial.mp4',
             '.drive.abcdefgh.partial.tmp.mp4', '.drive.short.partial.mp4',
             'photo.png.jpg', 'notes.partial.jpg']
    for name in names:
        (tmp_path / name).write_bytes(b'half')
    assert remove_partials(str(tmp_path), {'photo.png.jpg'}) == 1
    assert remove_partials(str(tmp_path), {'drive.mp4', 'photo.jpg'}) == 2
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ['.drive.short.partial.mp4',
                    '.photo.jpg.zz99zz99.partial.jpg', 'notes.partial.jpg',
                    'photo.png.jpg']
    assert remove_partials(str(tmp_path)) == 1
    assert remove_partials(str(tmp_path / 'missing')) == 0


def test_overlays_with_class_names_drawn_at_once_are_drawn_alone():
    """--with-labels draws on mmseg's visualizer, one canvas: overlays that
    the job's workers draw at once (4 threads, 24 images) are each the one
    drawn alone."""
    from concurrent.futures import ThreadPoolExecutor

    from mmseg.datasets import CityscapesDataset

    from repvgg_seg.inference.outputs import OutputWriter
    meta = dict(classes=CityscapesDataset.METAINFO['classes'],
                palette=CityscapesDataset.METAINFO['palette'])
    writer = OutputWriter('', meta, with_labels=True)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
              for _ in range(6)]
    labels = [np.kron(rng.integers(0, 19, (3, 4)), np.ones((16, 16))
                      ).astype(np.uint8) for _ in range(6)]
    alone = [writer.overlay(i, l) for i, l in zip(images, labels)]
    with ThreadPoolExecutor(4) as pool:
        at_once = list(pool.map(writer.overlay, images * 4, labels * 4))
    assert all(np.array_equal(a, b) for a, b in zip(at_once, alone * 4))
