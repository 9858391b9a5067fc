"""The checks of one image and its label file, read the way mmseg's loaders
read them: headers (size, mode, bit depth, EXIF orientation), then, in a
full check, the decoded pixels. :mod:`.checks` runs them over a data set.

mmseg reads images with ``LoadImageFromFile`` (cv2, ``IMREAD_COLOR``) and
labels with ``LoadAnnotations`` (Pillow, unchanged, then ``astype(uint8)``).
What the loaders do with unusual files (verified with mmcv 2.1 / cv2):

* grayscale and RGBA 8-bit images load as 3-channel BGR (gray replicated,
  alpha dropped): accepted, with a warning;
* 16-bit images load as their high byte (value >> 8): right for data that
  uses the 16-bit range, nearly black for data that does not (12-bit or
  8-bit values stored in 16 bits), which is an error;
* cv2 applies an image's EXIF orientation, Pillow does not apply the
  label's: such an image is an error, it would not align with its label;
* 16-bit (or 32-bit) label files load modulo 256: values up to 255 are
  right (warning), larger ones wrap into other classes (error, as values
  out of range);
* palette ('P') label files load as their indices: accepted;
* multi-channel label files (RGB colour maps, RGBA, gray + alpha) give a
  multi-channel ``gt_seg_map`` that mmseg mistakes for several maps: error.
"""
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np
from PIL import Image

from ..errors import shorten_list


# Pillow modes and what mmseg's loaders make of them.
_COLOUR_MODES = {'RGB', 'YCbCr', 'CMYK', 'P'}
_GRAY_MODES = {'L', '1', 'I;16', 'I;16B', 'I;16L', 'I;16N'}
_ALPHA_MODES = {'RGBA', 'RGBa', 'LA', 'La', 'PA'}
_LABEL_MODES = {'L', 'P', '1'}
_WIDE_LABEL_MODES = {'I;16', 'I;16B', 'I;16L', 'I;16N', 'I'}
_EXIF_ORIENTATION = 0x0112
# What reading a broken file raises (Pillow: UnidentifiedImageError is an
# OSError, some plugins raise SyntaxError).
_READ_ERRORS = (OSError, SyntaxError, ValueError)


@dataclass
class Header:
    """What a file's header says, read without decoding pixels."""
    width: int
    height: int
    mode: str
    bit_depth: int
    orientation: int

    @property
    def size(self) -> str:
        return f'{self.height}x{self.width}'


@dataclass
class PairResult:
    """The findings of one image / label pair."""
    findings: List[Tuple[str, str]] = field(default_factory=list)
    size: Optional[str] = None
    label_pixels: Optional[np.ndarray] = None



# ------------------------------------------------------------- headers
def _png_bit_depth(path: str) -> int:
    """Bits per sample of a PNG, from its IHDR chunk (Pillow reports 16-bit
    RGB as mode 'RGB')."""
    with open(path, 'rb') as f:
        head = f.read(26)
    return head[24] if head[12:16] == b'IHDR' else 8


def _exif_orientation(img: Image.Image) -> int:
    # Pillow's getexif() decodes a whole PNG unless its eXIf chunk comes
    # before the pixel data (where writers put it): look there only.
    if img.format == 'PNG' and 'exif' not in img.info:
        return 1
    return img.getexif().get(_EXIF_ORIENTATION, 1)


def read_header(path: str) -> Header:
    """Size, mode, bit depth and EXIF orientation of an image file."""
    with Image.open(path) as img:
        width, height = img.size
        mode, fmt = img.mode, img.format
        orientation = _exif_orientation(img)
    if fmt == 'PNG':
        bit_depth = _png_bit_depth(path)
    else:
        bit_depth = 16 if mode.startswith('I;16') else 8
    return Header(width, height, mode, bit_depth, orientation)


def _image_header_findings(header: Header, quick: bool) -> list:
    mode, findings = header.mode, []
    if header.bit_depth == 16:
        if quick:
            findings.append(('image16', f'{mode}, values not checked'))
    elif mode in _GRAY_MODES:
        findings.append(('grayscale', f'mode {mode}'))
    elif mode in _ALPHA_MODES:
        findings.append(('alpha', f'mode {mode}'))
    elif mode not in _COLOUR_MODES:
        findings.append(('image_format', f'mode {mode}: not an 8-bit RGB, '
                         'gray, palette or RGBA image'))
    if header.orientation not in (0, 1):
        findings.append(('exif_rotation', f'orientation {header.orientation}'))
    return findings


def _label_header_findings(header: Header) -> list:
    mode = header.mode
    if mode in _LABEL_MODES and header.bit_depth <= 8:
        return []
    if mode in _WIDE_LABEL_MODES:
        return [('wide_label', f'mode {mode}')]
    return [('label_format',
             f'mode {mode}, {Image.getmodebands(mode)} channels')]


# -------------------------------------------------------------- pixels
def _image_pixel_findings(path: str, header: Header) -> list:
    """Decodes an image as LoadImageFromFile does (raises if it cannot);
    checks the range of a 16-bit one."""
    import cv2
    import mmcv
    with open(path, 'rb') as f:
        content = f.read()
    if mmcv.imfrombytes(content, flag='color', backend='cv2') is None:
        raise OSError('cv2 cannot decode it')
    if header.bit_depth != 16:
        return []
    peak = int(cv2.imdecode(np.frombuffer(content, np.uint8),
                            cv2.IMREAD_UNCHANGED).max())
    if peak >> 8 < 16:  # the loader keeps the high byte
        return [('image_format', f'16-bit with values up to {peak}, loads '
                 f'as 8-bit values up to {peak >> 8} (nearly black)')]
    return [('image16', f'values up to {peak}')]


def _load_label(path: str) -> np.ndarray:
    """The label as LoadAnnotations reads it, before its uint8 cast."""
    import mmcv
    with open(path, 'rb') as f:
        content = f.read()
    return mmcv.imfrombytes(content, flag='unchanged', backend='pillow')


def _histogram(label: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(values present, pixel counts of the values 0..255)."""
    if label.dtype == np.uint8:  # bincount is much faster than unique
        counts = np.bincount(label.ravel(), minlength=256)
        return np.flatnonzero(counts), counts
    values = np.unique(label)
    small = label[label < 256].astype(np.int64)
    return values, np.bincount(small.ravel(), minlength=256)


@dataclass(frozen=True)
class PairOptions:
    """What :func:`check_pair` checks against."""
    valid_values: Tuple[int, ...]
    crop_size: Optional[Tuple[int, int]]
    quick: bool


def _read_headers(img_path, ann_path):
    """Both headers, or the finding that one is unreadable."""
    headers = []
    for path in (img_path, ann_path):
        try:
            headers.append(read_header(path))
        except _READ_ERRORS as e:
            return None, ('unreadable', f'{path}: {e}')
    return headers, None


def _check_pixels(img_path, ann_path, img_header, label_ok, valid_values):
    """Decodes both files as mmseg does: (findings, label histogram), the
    histogram None when a file does not decode."""
    try:
        findings = [(kind, f'{img_path} ({detail})') for kind, detail in
                    _image_pixel_findings(img_path, img_header)]
    except _READ_ERRORS as e:
        return [('unreadable', f'{img_path}: {e}')], None
    try:
        label = _load_label(ann_path)
    except _READ_ERRORS as e:
        return findings + [('unreadable', f'{ann_path}: {e}')], None
    if not label_ok:  # already reported; its values mean nothing
        return findings, np.zeros(256, np.int64)
    values, counts = _histogram(label)
    bad = values[~np.isin(values, valid_values)]
    if len(bad):
        values = shorten_list(bad.tolist(), 8)
        findings.append(('label_values', f'{ann_path}: values {values}'))
    return findings, counts


def _geometry_findings(img_path, ann_path, img_header, ann_header,
                       crop_size) -> list:
    findings = []
    if img_header.size != ann_header.size:
        findings.append(('size_mismatch', f'{ann_path}: {ann_header.size}, '
                         f'image {img_header.size} (HxW)'))
    if crop_size is not None:
        crop_h, crop_w = crop_size
        if img_header.height < crop_h or img_header.width < crop_w:
            findings.append(('too_small', f'{img_path}: {img_header.size}'))
    return findings


def check_pair(task: Tuple[str, str], options: PairOptions) -> PairResult:
    """All the checks of one image and its label."""
    img_path, ann_path = task
    headers, unreadable = _read_headers(img_path, ann_path)
    if unreadable:
        return PairResult([unreadable])
    img_header, ann_header = headers
    findings = [(kind, f'{img_path} ({detail})') for kind, detail in
                _image_header_findings(img_header, options.quick)]
    label_findings = _label_header_findings(ann_header)
    findings += [(kind, f'{ann_path} ({detail})')
                 for kind, detail in label_findings]
    label_pixels = None
    if not options.quick:
        label_ok = not any(k == 'label_format' for k, _ in label_findings)
        pixel_findings, label_pixels = _check_pixels(
            img_path, ann_path, img_header, label_ok, options.valid_values)
        findings += pixel_findings
        if label_pixels is None:
            return PairResult(findings)
    findings += _geometry_findings(img_path, ann_path, img_header,
                                   ann_header, options.crop_size)
    return PairResult(findings, img_header.size, label_pixels)
