"""What a request may carry (:mod:`repvgg_seg.serving.uploads`): each bad
upload is refused with its status and one line, before any decoding where
the header tells."""
import struct
import zlib

import cv2
import numpy as np
import pytest

from repvgg_seg.serving.uploads import (RequestError, check_content_type,
                                        decode_upload, image_header)


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` RGB pixels and whose
    data holds one row: what a decompression bomb's header looks like."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack('>I', len(data)) + kind + data + struct.pack(
            '>I', zlib.crc32(kind + data))
    header = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header) +
            chunk(b'IDAT', zlib.compress(b'\x00' * (1 + 3 * 8))) +
            chunk(b'IEND', b''))


def encoded(suffix: str, shape=(20, 30, 3)) -> bytes:
    image = np.random.default_rng(0).integers(0, 255, shape, np.uint8)
    return cv2.imencode(suffix, image)[1].tobytes()


def refusal(*args):
    with pytest.raises(RequestError) as info:
        decode_upload(*args)
    return info.value.status, info.value.reason


@pytest.mark.parametrize('kind', ['image/png', 'image/jpeg', 'image/bmp',
                                  'image/webp', 'image/tiff'])
def test_each_accepted_type_decodes_as_a_file_does(kind, tmp_path):
    suffix = '.' + kind.split('/')[1].replace('jpeg', 'jpg')
    data = encoded(suffix)
    path = tmp_path / f'x{suffix}'
    path.write_bytes(data)
    image = decode_upload(data, kind, 10**6)
    # what tools/infer.py reads from the same bytes in a file
    from repvgg_seg.inference.sources import read_image
    assert np.array_equal(image, read_image(str(path)))
    # sniffed where the client did not say
    assert np.array_equal(decode_upload(data, 'application/octet-stream',
                                        10**6), image)


def test_the_pixel_limit_is_checked_from_the_header():
    bomb = png_claiming(100_000, 100_000)
    assert len(bomb) < 100
    assert image_header(bomb) == ('PNG', 100_000, 100_000)
    status, reason = refusal(bomb, 'image/png', 4096 * 4096)
    assert status == 413
    assert reason == ('the image has 100000x100000 = 10000000000 pixels; '
                      'the limit is 16777216')
    # a real image that compresses well: refused before it is decoded
    zeros = cv2.imencode('.png', np.zeros((2000, 2000), np.uint8))[1]
    assert zeros.size < 20_000
    assert refusal(zeros.tobytes(), 'image/png', 10**6)[0] == 413
    assert decode_upload(zeros.tobytes(), 'image/png',
                         4 * 10**6).shape == (2000, 2000, 3)


def test_bad_bodies_get_400_with_the_reason():
    png = encoded('.png')
    assert refusal(b'', 'image/png', 10**6) == (
        400, 'the image is empty (0 bytes)')
    assert refusal(png[:len(png) // 2], 'image/png', 10**6) == (
        400, 'the image is truncated')
    assert refusal(b'hello world', 'application/octet-stream', 10**6) == (
        400, 'the body is not an image of an accepted type (image/png, '
        'image/jpeg, image/bmp, image/webp, image/tiff)')
    assert refusal(png, 'image/jpeg', 10**6) == (
        400, 'the body is a PNG image, not image/jpeg as its Content-Type '
        'says')


def test_other_content_types_get_415():
    with pytest.raises(RequestError) as info:
        check_content_type('text/plain; charset=utf-8')
    assert info.value.status == 415
    assert str(info.value).startswith('Content-Type text/plain is not '
                                      'served; send an image as image/png')
    assert check_content_type('IMAGE/PNG') == 'image/png'
    gif = b'GIF89a' + b'\x00' * 20
    assert refusal(gif, 'image/gif', 10**6)[0] == 415
