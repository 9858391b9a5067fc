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


def test_inputs_that_share_a_stem_keep_their_suffix(tmp_path):
    """photo.png, photo.jpg and photo.webp in one folder get the outputs
    photo.png.*, photo.jpg.* and photo.webp.*; an image alone with its
    stem (other.png, sub/photo.png) keeps the short name. A list file's
    images are named the same way."""
    from repvgg_seg.inference.sources import folder_items, list_items
    touch(tmp_path, 'photo.png', 'photo.jpg', 'photo.webp', 'other.png',
          'sub/photo.png')
    assert [i.name for i in folder_items(str(tmp_path))] == [
        'other', 'photo.jpg', 'photo.png', 'photo.webp', 'sub/photo']
    listed = tmp_path / 'list.txt'
    listed.write_text('photo.png\nsub/photo.png\nphoto.jpg\n')
    assert [i.name for i in list_items(str(listed))] == [
        'photo.png', 'sub/photo', 'photo.jpg']


def test_outputs_that_would_still_collide_are_an_error(tmp_path):
    """photo.png, photo.jpg and photo.png.jpg: photo.png's outputs, with
    the suffix kept, are photo.png.jpg's; two listed images from other
    folders with one file name. Each is one line naming both inputs."""
    from repvgg_seg.inference.sources import folder_items, list_items
    folder = tmp_path / 'clash'
    touch(folder, 'photo.png', 'photo.jpg', 'photo.png.jpg')
    with pytest.raises(InputError) as caught:
        folder_items(str(folder))
    assert str(caught.value) == (
        f'{folder}/photo.png and {folder}/photo.png.jpg would write the same '
        "outputs (named 'photo.png'); rename one of them")
    a, b = touch(tmp_path, 'a/x.png', 'b/x.png')
    listed = tmp_path / 'lists' / 'list.txt'
    listed.parent.mkdir()
    listed.write_text(f'{a}\n{b}\n')
    with pytest.raises(InputError) as caught:
        list_items(str(listed))
    assert str(caught.value) == (
        f"{a} and {b} would write the same outputs (named 'x.png'); rename "
        'one of them')
