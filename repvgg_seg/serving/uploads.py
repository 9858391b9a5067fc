"""What a request may carry: an image of an accepted type, under the size
and pixel limits, that decodes. Each refusal is a :class:`RequestError`
with its HTTP status and one line of reason; the pixel limit is checked
from the image's header before anything is decoded, so a small file that
claims a huge image (a decompression bomb) costs nothing."""
import io
import threading
import warnings
from typing import Optional, Tuple

import numpy as np

from ..errors import InputError
from ..inference.sources import decode_image

#: the image types served, by content type, and Pillow's names of them
IMAGE_TYPES = {
    'image/png': 'PNG', 'image/jpeg': 'JPEG', 'image/bmp': 'BMP',
    'image/webp': 'WEBP', 'image/tiff': 'TIFF'
}
#: content types whose bytes are sniffed (clients that send a file without
#: knowing its type: curl --data-binary, a multipart part without a type)
UNTYPED = ('', 'application/octet-stream')
_OWN_PIXEL_LIMIT = threading.Lock()


class RequestError(Exception):
    """A request that is refused: its HTTP ``status`` and one line of
    ``reason``; ``headers`` for the response (``Retry-After``)."""

    def __init__(self, status: int, reason: str,
                 headers: Optional[dict] = None):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}


def media_type(content_type: Optional[str]) -> str:
    """``image/png`` of ``image/png; charset=...``, lower case."""
    return (content_type or '').split(';')[0].strip().lower()


def check_content_type(content_type: Optional[str]) -> str:
    """The media type of a body that may be an image (415 otherwise)."""
    kind = media_type(content_type)
    if kind in IMAGE_TYPES or kind in UNTYPED:
        return kind
    raise RequestError(
        415, f'Content-Type {kind} is not served; send an image as '
        f'{", ".join(IMAGE_TYPES)} or multipart/form-data with a file part')


def image_header(data: bytes, kind: str = '') -> Tuple[str, int, int]:
    """``(format, width, height)`` read from the image's header only (no
    pixel is decoded); 400 for bytes that are no image of an accepted type
    or that do not match their declared type ``kind``."""
    from PIL import Image
    if not data:
        raise RequestError(400, 'the image is empty (0 bytes)')
    try:
        with _OWN_PIXEL_LIMIT, warnings.catch_warnings():
            # the pixel limit is this service's own, checked by the caller
            # with the size in its reason: Pillow's is lifted while the
            # header is read (a global, hence the lock)
            warnings.simplefilter('ignore', Image.DecompressionBombWarning)
            limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                with Image.open(io.BytesIO(data),
                                formats=list(IMAGE_TYPES.values())) as image:
                    found, (width, height) = image.format, image.size
            finally:
                Image.MAX_IMAGE_PIXELS = limit
    except Exception:  # Pillow raises several types for bytes it cannot read
        raise RequestError(
            400, 'the body is not an image of an accepted type '
            f'({", ".join(IMAGE_TYPES)})') from None
    declared = IMAGE_TYPES.get(kind)
    if declared is not None and declared != found:
        raise RequestError(400, f'the body is a {found} image, not {kind} '
                           'as its Content-Type says')
    return found, width, height


def decode_upload(data: bytes, content_type: Optional[str],
                  max_pixels: int) -> np.ndarray:
    """The BGR image of an upload, decoded as ``tools/infer.py`` decodes a
    file (:func:`repvgg_seg.inference.sources.decode_image`), once its
    type, header and pixel count are checked (415, 400, 413)."""
    kind = check_content_type(content_type)
    _, width, height = image_header(data, kind)
    if width * height > max_pixels:
        raise RequestError(
            413, f'the image has {width}x{height} = {width * height} pixels; '
            f'the limit is {max_pixels}')
    try:
        return decode_image(data, 'the image')
    except InputError as exc:
        raise RequestError(400, str(exc)) from None


__all__ = ['IMAGE_TYPES', 'RequestError', 'check_content_type',
           'decode_upload', 'image_header', 'media_type']
