"""What tools/infer.py segments (:mod:`repvgg_seg.inference.sources`) and
the project's one image lister (:mod:`repvgg_seg.evaluation.images`): which
files are images, in which order, and the name each input's outputs get."""
import os.path as osp

import pytest

from repvgg_seg.errors import InputError


def touch(folder, *names):
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b'')
    return [str(folder / name) for name in names]


def test_one_image_lister_for_files_and_folders(tmp_path):
    """Folders are searched recursively and sorted by path, with every
    image suffix in any case (.webp too) and nothing else; files are taken
    as given, whatever their suffix; a missing path and a folder without
    images are errors that name them."""
    from repvgg_seg.evaluation.images import IMAGE_SUFFIXES, image_files
    assert IMAGE_SUFFIXES == ('.png', '.jpg', '.jpeg', '.bmp', '.tif',
                              '.tiff', '.webp')
    photos = tmp_path / 'photos'
    touch(photos, 'b.png', 'a/z.WEBP', 'a/y.jpeg', 'c.tif', 'notes.txt',
          'a/deeper/x.JPG', 'movie.mp4')
    listed = str(tmp_path / 'listed.dat')
    touch(tmp_path, 'listed.dat')
    found = image_files([str(photos), listed])
    assert [osp.relpath(p, tmp_path) for p in found] == [
        'photos/a/deeper/x.JPG', 'photos/a/y.jpeg', 'photos/a/z.WEBP',
        'photos/b.png', 'photos/c.tif', 'listed.dat']
    with pytest.raises(FileNotFoundError,
                       match=f'^image not found: {tmp_path}/gone.png$'):
        image_files([str(photos), str(tmp_path / 'gone.png')])
    (tmp_path / 'empty').mkdir()
    touch(tmp_path / 'empty', 'notes.txt')
    # an InputError for the tools, and a missing file for the callers that
    # caught those before the one lister
    for error in (InputError, FileNotFoundError):
        with pytest.raises(error) as caught:
            image_files([str(tmp_path / 'empty')])
        assert str(caught.value) == (
            'no images (.png, .jpg, .jpeg, .bmp, .tif, .tiff, .webp) under '
            f'{tmp_path}/empty')


def test_infer_lists_a_folder_with_the_one_lister(tmp_path):
    """tools/infer.py's folder items are the lister's images (a .webp
    among them), in its order, named by their path in the folder; an
    image file is an input by itself, any other file is not."""
    from repvgg_seg.evaluation.images import image_files
    from repvgg_seg.inference.sources import folder_items, resolve_inputs
    touch(tmp_path, 'b.png', 'a/z.webp', 'a/y.jpeg', 'notes.md')
    items = folder_items(str(tmp_path))
    assert [i.path for i in items] == image_files([str(tmp_path)])
    assert [i.name for i in items] == ['a/y', 'a/z', 'b']
    assert [i.name for i in resolve_inputs(str(tmp_path / 'a' / 'z.webp'))
            ] == ['z']
    with pytest.raises(InputError, match='not an image, a folder, a list'):
        resolve_inputs(str(tmp_path / 'notes.md'))
    with pytest.raises(InputError, match=f'^no images .* under {tmp_path}/'
                       'none$'):
        (tmp_path / 'none').mkdir()
        folder_items(str(tmp_path / 'none'))
