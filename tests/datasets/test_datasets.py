"""Data: the synthetic mini-Cityscapes, Cityscapes preparation and the
data set checks (with the loader behaviour they rely on)."""
import io
import json
import os
import os.path as osp

import cv2
import numpy as np
import pytest
from PIL import Image

from repvgg_seg.datasets import (DatasetError, check_segmentation_dataset,
                                 make_synthetic_cityscapes,
                                 prepare_cityscapes)
from repvgg_seg.datasets.cityscapes import label_id_to_train_id_lut
from tests import helpers
from tests.conftest import REPO

IMG = '_leftImg8bit.png'
SEG = '_gtFine_labelTrainIds.png'
SMALL = dict(num_train=6, num_val=3, size=(128, 256), seed=0)


def raises(pattern):
    """DatasetError whose (multi-line) message matches ``pattern``."""
    return pytest.raises(DatasetError, match='(?s)' + pattern)


def run_tool(name, argv):
    """A tool's exit status (its messages stay in capsys)."""
    return helpers.run_tool(name, *argv)[0]


def files_under(root):
    return sorted(osp.relpath(osp.join(d, f), root)
                  for d, _, names in os.walk(root) for f in names)


@pytest.fixture(scope='module')
def synthetic(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('synthetic') / 'cityscapes')
    summary = make_synthetic_cityscapes(root, **SMALL)
    return root, summary


# ------------------------------------------------------------ synthetic
def test_synthetic_layout_and_names(synthetic):
    root, summary = synthetic
    files = files_under(root)
    images = [f for f in files if f.startswith('leftImg8bit')]
    labels = [f for f in files if f.startswith('gtFine')]
    assert len(images) == len(labels) == 9
    assert 'leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png' \
        in images
    assert 'gtFine/val/lindau/lindau_000000_000019_gtFine_labelTrainIds.png' \
        in labels
    cities = {split: {f.split('/')[2] for f in images if f.split('/')[1]
                      == split} for split in ('train', 'val')}
    assert cities == {'train': {'aachen', 'bochum', 'bremen'},
                      'val': {'frankfurt', 'lindau'}}
    for image in images:
        label = image.replace('leftImg8bit/', 'gtFine/', 1).replace(IMG, SEG)
        assert label in labels
        with Image.open(osp.join(root, image)) as img, \
                Image.open(osp.join(root, label)) as seg:
            assert (img.mode, img.size) == ('RGB', (256, 128))
            assert (seg.mode, seg.size) == ('L', (256, 128))
    assert summary['splits']['train']['images'] == 6
    assert {'road', 'sidewalk', 'building', 'vegetation', 'sky', 'car',
            'person', 'pole'} <= set(summary['classes'])


def test_synthetic_loads_in_mmseg(synthetic):
    from mmengine.registry import DefaultScope
    from mmseg.registry import DATASETS  # imports mmseg.datasets on use
    root, _ = synthetic
    with DefaultScope.overwrite_default_scope('mmseg'):  # for the pipeline
        dataset = DATASETS.build(dict(
            type='CityscapesDataset', data_root=root,
            data_prefix=dict(img_path='leftImg8bit/train',
                             seg_map_path='gtFine/train'),
            pipeline=[dict(type='LoadImageFromFile'),
                      dict(type='LoadAnnotations'),
                      dict(type='PackSegInputs')]))
    assert len(dataset) == 6
    classes, images = set(), []
    for i in range(len(dataset)):
        sample = dataset[i]
        image = sample['inputs'].numpy()
        label = sample['data_samples'].gt_sem_seg.data.numpy()
        assert image.shape == (3, 128, 256) and label.shape == (1, 128, 256)
        values = set(np.unique(label).tolist())
        assert values <= set(range(19)) | {255}
        classes |= values - {255}
        images.append(image)
    assert len(classes) >= 8, classes
    for i in range(len(images)):
        for j in range(i):
            assert np.abs(images[i].astype(int) - images[j]).mean() > 10


def test_synthetic_is_deterministic(tmp_path):
    params = dict(num_train=2, num_val=1, size=(64, 128))
    make_synthetic_cityscapes(str(tmp_path / 'a'), seed=3, **params)
    make_synthetic_cityscapes(str(tmp_path / 'b'), seed=3, **params)
    make_synthetic_cityscapes(str(tmp_path / 'c'), seed=4, **params)
    files = [f for f in files_under(tmp_path / 'a') if f.endswith('.png')]
    assert len(files) == 6 and files == [
        f for f in files_under(tmp_path / 'c') if f.endswith('.png')]

    def content(name, f):
        with open(tmp_path / name / f, 'rb') as fh:
            return fh.read()
    assert all(content('a', f) == content('b', f) for f in files)
    assert all(content('a', f) != content('c', f) for f in files)


def test_synthetic_is_idempotent_and_refuses_other_parameters(tmp_path):
    root = str(tmp_path / 'data')
    params = dict(num_train=2, num_val=1, size=(64, 128), seed=0)
    summary = make_synthetic_cityscapes(root, **params)
    mtimes = {f: os.stat(osp.join(root, f)).st_mtime_ns
              for f in files_under(root)}
    assert make_synthetic_cityscapes(root, **params) == summary
    assert {f: os.stat(osp.join(root, f)).st_mtime_ns
            for f in files_under(root)} == mtimes

    with raises(r'num_train: 2 there, 3 asked'):
        make_synthetic_cityscapes(root, **dict(params, num_train=3))
    assert files_under(root) == sorted(mtimes)  # left untouched

    make_synthetic_cityscapes(root, overwrite=True,
                              **dict(params, num_train=1, seed=5))
    images = [f for f in files_under(root) if f.endswith(IMG)]
    assert len(images) == 2  # 1 train + 1 val, the old files are gone
    assert not [f for f in os.listdir(tmp_path) if f != 'data']  # no temp


def test_synthetic_refuses_a_foreign_folder(tmp_path):
    (tmp_path / 'notes.txt').write_text('mine')
    with raises('not empty'):
        make_synthetic_cityscapes(str(tmp_path), num_train=1, num_val=1,
                                  size=(64, 128))
    assert os.listdir(tmp_path) == ['notes.txt']


def test_make_synthetic_cli(tmp_path, capsys):
    root = str(tmp_path / 'data')
    argv = [root, '--num-train', '1', '--num-val', '1', '--height', '64',
            '--width', '128']
    assert run_tool('make_synthetic_cityscapes', argv) == 0
    assert json.loads(capsys.readouterr().out)['splits']['val']['images'] \
        == 1
    assert run_tool('make_synthetic_cityscapes', argv + ['--seed', '1']) == 2
    assert 'error:' in capsys.readouterr().err
    assert run_tool('make_synthetic_cityscapes',
                    argv + ['--seed', '1', '--force']) == 0


# --------------------------------------------------- cityscapes preparation
# Label ids -> train ids of the official table (cityscapesscripts).
KNOWN_IDS = {7: 0, 8: 1, 11: 2, 17: 5, 21: 8, 23: 10, 24: 11, 26: 13,
             33: 18, 0: 255, 1: 255, 4: 255, 14: 255}


def write_png(path, array):
    os.makedirs(osp.dirname(path), exist_ok=True)
    assert cv2.imwrite(str(path), array)


def fake_cityscapes(root, splits=('train', 'val'), per_split=2):
    """A tiny official download: images and ``_gtFine_labelIds.png``."""
    ids = np.array(list(KNOWN_IDS), np.uint8)
    label_ids = np.resize(ids, (4, 8))
    names = {}
    for split in splits:
        city = 'aachen' if split == 'train' else 'lindau'
        names[split] = [f'{city}/{city}_{i:06d}_000019'
                        for i in range(per_split)]
        for i, name in enumerate(names[split]):
            write_png(osp.join(root, 'leftImg8bit', split, name + IMG),
                      np.full((4, 8, 3), 100, np.uint8))
            write_png(osp.join(root, 'gtFine', split,
                               name + '_gtFine_labelIds.png'),
                      np.roll(label_ids, i))
    return label_ids, names


def read_label(path):
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def test_lut_follows_cityscapesscripts():
    lut = label_id_to_train_id_lut()
    assert lut.dtype == np.uint8 and lut.shape == (256, )
    assert {i: int(lut[i]) for i in KNOWN_IDS} == KNOWN_IDS
    assert (lut[34:] == 255).all()


def test_prepare_writes_exact_train_ids(tmp_path):
    root = str(tmp_path)
    label_ids, names = fake_cityscapes(root)
    summary = prepare_cityscapes(root)
    assert summary['splits']['train'] == dict(samples=2, converted=2,
                                              drawn=0, skipped=0)
    expected = np.vectorize(KNOWN_IDS.get)(label_ids).astype(np.uint8)
    out = read_label(osp.join(root, 'gtFine/train', names['train'][0] + SEG))
    assert out.dtype == np.uint8 and out.ndim == 2
    np.testing.assert_array_equal(out, expected)
    out = read_label(osp.join(root, 'gtFine/val', names['val'][1] + SEG))
    np.testing.assert_array_equal(out, np.roll(expected, 1))
    with open(osp.join(root, 'train.txt')) as f:
        assert f.read().split() == names['train']
    assert not [f for f in files_under(root) if '.tmp' in f]


def test_prepare_skips_up_to_date_outputs(tmp_path):
    root = str(tmp_path)
    _, names = fake_cityscapes(root)
    prepare_cityscapes(root)
    out = osp.join(root, 'gtFine/train', names['train'][0] + SEG)
    mtime = os.stat(out).st_mtime_ns
    summary = prepare_cityscapes(root)
    assert summary['splits']['train'] == dict(samples=2, converted=0,
                                              drawn=0, skipped=2)
    assert os.stat(out).st_mtime_ns == mtime
    # A source newer than its output is converted again.
    source = out.replace(SEG, '_gtFine_labelIds.png')
    os.utime(source, ns=(mtime + 10**9, mtime + 10**9))
    summary = prepare_cityscapes(root, nproc=2)
    assert summary['splits']['train']['converted'] == 1
    assert summary['splits']['train']['skipped'] == 1


def test_prepare_draws_polygons_when_no_label_ids(tmp_path):
    root = str(tmp_path)
    name = 'aachen/aachen_000000_000019'
    write_png(osp.join(root, 'leftImg8bit/train', name + IMG),
              np.zeros((4, 8, 3), np.uint8))
    polygons = dict(imgHeight=4, imgWidth=8, objects=[
        dict(label='road', polygon=[[0, 0], [7, 0], [7, 3], [0, 3]]),
        dict(label='car', polygon=[[4, 0], [7, 0], [7, 3], [4, 3]])])
    os.makedirs(osp.join(root, 'gtFine/train/aachen'))
    with open(osp.join(root, 'gtFine/train',
                       name + '_gtFine_polygons.json'), 'w') as f:
        json.dump(polygons, f)
    summary = prepare_cityscapes(root)
    assert summary['splits']['train']['drawn'] == 1
    out = read_label(osp.join(root, 'gtFine/train', name + SEG))
    assert out[1, 1] == 0 and out[1, 6] == 13  # road, car drawn over it


def test_prepare_errors_name_what_is_missing(tmp_path):
    with raises('does not exist'):
        prepare_cityscapes(str(tmp_path / 'nowhere'))
    os.makedirs(tmp_path / 'leftImg8bit/train')
    with raises(r'no gtFine/ folder'):
        prepare_cityscapes(str(tmp_path))

    root = str(tmp_path / 'images_only')
    fake_cityscapes(root)
    for f in files_under(osp.join(root, 'gtFine', 'val')):
        os.remove(osp.join(root, 'gtFine', 'val', f))
    with raises(r"split 'val' has 2 images .* but no annotations"):
        prepare_cityscapes(root)
    assert not [f for f in files_under(root) if f.endswith(SEG)]

    root = str(tmp_path / 'labels_only')
    fake_cityscapes(root, splits=('train', ))
    for f in files_under(osp.join(root, 'leftImg8bit')):
        os.remove(osp.join(root, 'leftImg8bit', f))
    with raises(r"split 'train' has 2 annotations .* but no images"):
        prepare_cityscapes(root)

    root = str(tmp_path / 'partial')
    _, names = fake_cityscapes(root, splits=('train', ), per_split=3)
    os.remove(osp.join(root, 'leftImg8bit/train', names['train'][1] + IMG))
    with raises('1 annotations without image') as error:
        prepare_cityscapes(root)
    assert names['train'][1] in str(error.value)


def test_prepare_cli(tmp_path, capsys):
    fake_cityscapes(str(tmp_path))
    assert run_tool('prepare_cityscapes', [str(tmp_path)]) == 0
    assert 'train: 2 samples, 2 converted' in capsys.readouterr().out
    assert run_tool('prepare_cityscapes', [str(tmp_path / 'x')]) == 2
    assert 'error: Cityscapes root' in capsys.readouterr().err


# --------------------------------------------------------------- checks
def rgb_image(height=4, width=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def label_map(height=4, width=6):
    return np.resize(np.array([0, 1, 2, 18, 255, 7], np.uint8),
                     (height, width))


def write_pair(root, name, image=None, label=None):
    """One sample in ``root/img`` and ``root/ann`` (cityscapes suffixes);
    image and label are arrays (cv2, BGR) or PIL images."""
    image = rgb_image() if image is None else image
    label = label_map() if label is None else label
    paths = (osp.join(root, 'img', name + IMG),
             osp.join(root, 'ann', name + SEG))
    for path, data in zip(paths, (image, label)):
        os.makedirs(osp.dirname(path), exist_ok=True)
        if isinstance(data, Image.Image):
            data.save(path)
        else:
            assert cv2.imwrite(path, data)
    return paths


def check(root, **kwargs):
    return check_segmentation_dataset(str(root), 'img', 'ann', **kwargs)


def load_like_mmseg(img_path, seg_path):
    from mmcv.transforms import LoadImageFromFile
    from mmseg.datasets.transforms import LoadAnnotations
    results = dict(img_path=img_path, seg_map_path=seg_path,
                   reduce_zero_label=False, seg_fields=[])
    results = LoadAnnotations()(LoadImageFromFile()(results))
    return results['img'], results['gt_seg_map']


def test_check_passes_the_synthetic_data(synthetic):
    root, _ = synthetic
    for quick in (False, True):
        report = check_segmentation_dataset(
            root, 'leftImg8bit/train', 'gtFine/train', crop_size=(128, 128),
            quick=quick)
        assert report.num_images == 6 and not report.warnings
        assert report.image_sizes == {'128x256': 6}
    assert set(report.label_pixels) == set()  # quick: no pixels read
    report = check_segmentation_dataset(root, 'leftImg8bit/val',
                                        'gtFine/val', nproc=2)
    assert set(report.label_pixels) <= set(range(19)) | {255}
    assert '3 image/label pairs' in report.format()


def test_check_missing_folders(tmp_path):
    with raises('data root .*nowhere does not exist'):
        check(tmp_path / 'nowhere')
    write_pair(str(tmp_path), 'a')
    os.rename(tmp_path / 'ann', tmp_path / 'labels')
    with raises(r'label folder .*ann not found; .* holds: img, labels'):
        check(tmp_path)


def test_check_wrong_suffix_shows_the_files_found(tmp_path):
    write_pair(str(tmp_path), 'a')
    with raises(r"no label files ending with "
                r"'_gtFine_labelIds.png' .*a_gtFine_labelTrainIds"):
        check(tmp_path, seg_map_suffix='_gtFine_labelIds.png')


def test_check_unpaired_files_are_named(tmp_path):
    root = str(tmp_path)
    for i in range(9):
        write_pair(root, f'city/s{i}')
    for i in range(7):  # 7 images lose their label
        os.remove(osp.join(root, 'ann', f'city/s{i}{SEG}'))
    os.remove(osp.join(root, 'img', f'city/s8{IMG}'))
    with pytest.raises(DatasetError) as error:
        check(tmp_path)
    message = str(error.value)
    assert '7 images without a label file:\n' in message
    assert f'    {root}/img/city/s0{IMG}\n' in message
    assert f's4{IMG}' in message and f's5{IMG}' not in message
    assert '    ... (7 in all)\n' in message
    assert f'1 label files without an image:\n    {root}/ann/city/s8{SEG}' \
        in message


def test_check_size_mismatch(tmp_path):
    write_pair(str(tmp_path), 'good')
    write_pair(str(tmp_path), 'bad', label=label_map(4, 8))
    for quick in (False, True):
        with raises(r'1 label files whose size '
                    r'differs .*bad_gtFine_labelTrainIds.png: 4x8, '
                    r'image 4x6'):
            check(tmp_path, quick=quick)


def test_check_label_values(tmp_path):
    label = label_map()
    label[0, :2] = (19, 200)
    write_pair(str(tmp_path), 'bad', label=label)
    with raises(r'values outside 0..18 and 255 '
                r'\(ignore_index\):.*bad_gtFine_labelTrainIds.png: '
                r'values 19, 200'):
        check(tmp_path)
    check(tmp_path, quick=True)  # quick reads headers, not values
    check(tmp_path, num_classes=201)
    # With reduce_zero_label, raw values 0..num_classes are valid.
    with raises('values 200'):
        check(tmp_path, num_classes=19, reduce_zero_label=True)


def test_gray_and_rgba_images_load_as_bgr_and_warn(tmp_path):
    bgr = rgb_image()
    gray, bgra = bgr[..., 0], np.dstack([bgr, bgr[..., :1]])
    paths = {name: write_pair(str(tmp_path), name, image=image)
             for name, image in (('gray', gray), ('bgra', bgra))}
    # The experiment the check relies on: mmseg's loader converts both.
    image, _ = load_like_mmseg(*paths['gray'])
    np.testing.assert_array_equal(image, np.dstack([gray] * 3))
    image, _ = load_like_mmseg(*paths['bgra'])
    np.testing.assert_array_equal(image, bgr)
    for quick in (False, True):
        warnings = '\n'.join(check(tmp_path, quick=quick).warnings)
        assert '1 grayscale images' in warnings and f'gray{IMG}' in warnings
        assert 'alpha channel' in warnings and f'bgra{IMG}' in warnings


def test_16bit_images(tmp_path):
    bgr = rgb_image()
    full, low = bgr.astype(np.uint16) * 257, bgr.astype(np.uint16)
    paths = write_pair(str(tmp_path), 'full', image=full)
    image, _ = load_like_mmseg(*paths)  # the high byte of each value
    np.testing.assert_array_equal(image, bgr)
    assert '16-bit images' in check(tmp_path).warnings[0]
    paths = write_pair(str(tmp_path), 'low', image=low)
    image, _ = load_like_mmseg(*paths)
    assert image.max() == 0  # 8-bit data in 16 bits loads black
    with raises(r'images that mmseg does not '
                r'load correctly:.*low_leftImg8bit.png \(16-bit with '
                f'values up to {low.max()}, .*nearly black'):
        check(tmp_path)
    assert 'values not checked' in '\n'.join(
        check(tmp_path, quick=True).warnings)


def test_16bit_labels(tmp_path):
    label = label_map().astype(np.uint16)
    paths = write_pair(str(tmp_path), 'ok16', label=label)
    _, gt = load_like_mmseg(*paths)
    np.testing.assert_array_equal(gt, label)
    assert '16/32-bit label files' in check(tmp_path).warnings[0]
    label[0, 0] = 256 + 7
    paths = write_pair(str(tmp_path), 'wrapped', label=label)
    _, gt = load_like_mmseg(*paths)
    assert gt[0, 0] == 7  # silently another class
    with raises(r'wrapped_gtFine_labelTrainIds'
                r'.png: values 263'):
        check(tmp_path)


def test_multichannel_labels_are_rejected(tmp_path):
    paths = write_pair(str(tmp_path), 'colour',
                       label=np.dstack([label_map()] * 3))
    _, gt = load_like_mmseg(*paths)
    assert gt.shape == (4, 6, 3)  # PackSegInputs would make 4 maps of 6x3
    for quick in (False, True):
        with raises(r'label files that mmseg '
                    r'does not load correctly .*colour_gtFine_label'
                    r'TrainIds.png \(mode RGB, 3 channels\)'):
            check(tmp_path, quick=quick)


def test_palette_labels_are_accepted(tmp_path):
    label = Image.fromarray(label_map(), 'P')
    label.putpalette([(i * 37) % 256 for i in range(768)])
    paths = write_pair(str(tmp_path), 'palette', label=label)
    _, gt = load_like_mmseg(*paths)
    np.testing.assert_array_equal(gt, label_map())
    report = check(tmp_path)
    assert not report.warnings and set(report.label_pixels) == {
        0, 1, 2, 7, 18, 255}


def test_images_smaller_than_the_crop(tmp_path):
    write_pair(str(tmp_path), 'big', image=rgb_image(8, 8),
               label=label_map(8, 8))
    write_pair(str(tmp_path), 'small')
    with raises(r'1 images smaller than the crop '
                r'size 8x8 \(HxW\):.*small_leftImg8bit.png: 4x6'):
        check(tmp_path, crop_size=8, quick=True)
    check(tmp_path, crop_size=(4, 6))


def test_corrupt_files(tmp_path):
    root = str(tmp_path)
    write_pair(root, 'good')
    image_path, label_path = write_pair(root, 'truncated')
    with open(image_path, 'rb') as f:
        data = f.read()
    with open(image_path, 'wb') as f:
        f.write(data[:len(data) // 2])
    check(tmp_path, quick=True)  # the header is intact
    with raises(r'unreadable or corrupt files:'
                r'.*truncated_leftImg8bit.png: cv2 cannot decode'):
        check(tmp_path)
    with open(image_path, 'wb') as f:
        f.write(b'not an image')
    with raises(r'truncated_leftImg8bit.png: '
                'cannot identify image file'):
        check(tmp_path, quick=True)


def test_exif_rotated_images_are_rejected(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 3  # rotated by 180 degrees
    buffer = io.BytesIO()
    Image.fromarray(rgb_image()).save(buffer, 'png', exif=exif.tobytes())
    write_pair(str(tmp_path), 'rotated',
               image=Image.open(io.BytesIO(buffer.getvalue())))
    img_path = str(tmp_path / 'img' / f'rotated{IMG}')
    with open(img_path, 'wb') as f:
        f.write(buffer.getvalue())
    with raises(r'EXIF rotation .*rotated_left'
                r'Img8bit.png \(orientation 3\)'):
        check(tmp_path, quick=True)


def write_config(tmp_path, crop):
    path = tmp_path / 'config.py'
    path.write_text(
        f"_base_ = '{REPO}/configs/_base_/datasets/cityscapes_713x713.py'\n"
        'train_dataloader = dict(dataset=dict(pipeline=[\n'
        "    dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),\n"
        f"    dict(type='RandomCrop', crop_size={crop})]))\n")
    return str(path)


def test_check_dataset_cli(synthetic, tmp_path, capsys):
    root, _ = synthetic
    config = write_config(tmp_path, (128, 128))
    assert run_tool('check_dataset', [config, '--data-root', root]) == 0
    out = capsys.readouterr().out
    assert '6 image/label pairs' in out and '3 image/label pairs' in out
    # The project's config resizes before its 713x713 crop: any stored size
    # can be cropped; a crop that sees the stored 128x256 images cannot.
    config = osp.join(REPO, 'configs', 'pspnet_repvgg_a0.py')
    assert run_tool('check_dataset', [config, '--data-root', root,
                                      '--quick', '--splits', 'train']) == 0
    capsys.readouterr()
    config = write_config(tmp_path, (713, 713))
    assert run_tool('check_dataset', [config, '--data-root', root,
                                      '--quick', '--splits', 'train']) == 2
    err = capsys.readouterr().err
    assert 'error: ' in err and 'smaller than the crop size ' \
        '713x713' in err and f'aachen_000000_000019{IMG}: 128x256' in err


# --------------------------------------- the check in a multi-process job
def setup_with_missing_data(tmp_path, launcher):
    """tools/train.py's set-up of the demo config with a train data root
    that does not exist (the check fails wherever it runs)."""
    from repvgg_seg.runs import setup_train_cfg
    from tests.conftest import DEMO_CONFIG
    return setup_train_cfg(
        DEMO_CONFIG, work_dir=str(tmp_path / 'work'), launcher=launcher,
        cfg_options={'train_dataloader.dataset.data_root':
                     str(tmp_path / 'nowhere')})


@pytest.mark.parametrize('launcher, rank_variable, others', [
    ('pytorch', 'RANK', {'WORLD_SIZE': '2', 'LOCAL_RANK': '1'}),  # torchrun
    ('slurm', 'SLURM_PROCID', {'SLURM_NTASKS': '2'}),  # srun
])
def test_the_data_check_runs_on_rank_0_only(tmp_path, monkeypatch, launcher,
                                            rank_variable, others):
    """torchrun and srun start every rank with the same command: the data
    set is checked once, by rank 0, whose failure takes the job down."""
    for name, value in others.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv(rank_variable, '1')
    with helpers.captured_log() as log:
        cfg = setup_with_missing_data(tmp_path, launcher)
    assert cfg.launcher == launcher
    assert 'data check: rank 0 checks the data (this is rank 1)' in \
        log.messages
    monkeypatch.setenv(rank_variable, '0')
    with raises(r'train data: data root .*nowhere does not exist'):
        setup_with_missing_data(tmp_path, launcher)
    # without a launcher a process is on its own: it checks, whatever the
    # environment says
    monkeypatch.setenv(rank_variable, '1')
    with raises(r'train data: data root .*nowhere does not exist'):
        setup_with_missing_data(tmp_path, 'none')


def test_data_check_takes_the_settings_of_the_built_data_set():
    """The class's defaults (ADE20K: .jpg/.png, reduce_zero_label, 150
    classes) under the config's settings, without building a transform."""
    from repvgg_seg.datasets.config_check import check_options
    classes, options = check_options(dict(
        type='ADE20KDataset', data_root='data/ade',
        data_prefix=dict(img_path='images/training',
                         seg_map_path='annotations/training'),
        pipeline=[dict(type='NotATransform'),
                  dict(type='RandomCrop', crop_size=(512, 512))]))
    assert len(classes) == 150 and classes[:2] == ['wall', 'building']
    assert options == dict(
        data_root='data/ade', img_dir='images/training',
        ann_dir='annotations/training', img_suffix='.jpg',
        seg_map_suffix='.png', num_classes=150, ignore_index=255,
        reduce_zero_label=True, crop_size=(512, 512))
    classes, options = check_options(dict(
        type='CityscapesDataset', data_root='data/cityscapes',
        metainfo=dict(classes=('road', 'car')), ignore_index=254,
        seg_map_suffix='_gtFine_labelIds.png'), data_root='elsewhere')
    assert classes == ['road', 'car']
    assert options == dict(
        data_root='elsewhere', img_dir='', ann_dir='',
        img_suffix='_leftImg8bit.png', seg_map_suffix='_gtFine_labelIds.png',
        num_classes=2, ignore_index=254, reduce_zero_label=False,
        crop_size=None)


def affinity(monkeypatch, cpus):
    """This process may run on ``cpus`` of a 64-core machine (taskset,
    a cpuset, Slurm's binding)."""
    monkeypatch.setattr(os, 'sched_getaffinity', lambda pid: set(cpus))
    monkeypatch.setattr(os, 'cpu_count', lambda: 64)


def test_usable_cpus_follow_affinity_and_slurm(monkeypatch):
    from repvgg_seg.datasets.checks import default_nproc, usable_cpus
    monkeypatch.delenv('SLURM_CPUS_PER_TASK', raising=False)
    affinity(monkeypatch, range(8, 16))
    assert usable_cpus() == 8 and usable_cpus(3) == 3
    assert default_nproc() == 8
    monkeypatch.setenv('SLURM_CPUS_PER_TASK', '1')
    assert usable_cpus() == 1 and usable_cpus(4) == 1
    monkeypatch.setenv('SLURM_CPUS_PER_TASK', '5')
    assert usable_cpus() == 5 and usable_cpus(2) == 2
    affinity(monkeypatch, range(2))
    assert usable_cpus() == 2 and default_nproc() == 2


def test_the_check_decodes_in_the_usable_cpus(synthetic, tmp_path,
                                              monkeypatch):
    """The data check's processes: the CPUs this process may use (at most
    8), also when more are asked for."""
    from repvgg_seg.config import load_config
    from repvgg_seg.datasets import checks
    from repvgg_seg.datasets.config_check import check_config_datasets
    root, _ = synthetic
    pools = []

    def serial(func, tasks, nproc, **kwargs):
        pools.append(nproc)
        return [func(task) for task in tasks]

    monkeypatch.setattr(checks, 'track_parallel_progress', serial)
    affinity(monkeypatch, range(8))
    monkeypatch.setenv('SLURM_CPUS_PER_TASK', '3')
    monkeypatch.setenv('LOCAL_WORLD_SIZE', '1')
    cfg = load_config(write_config(tmp_path, (128, 128)))
    reports = check_config_datasets(cfg, ['train'], data_root=root)
    assert reports[0][2].num_images == 6
    check_config_datasets(cfg, ['train'], data_root=root, nproc=16)
    assert pools == [3, 3]
