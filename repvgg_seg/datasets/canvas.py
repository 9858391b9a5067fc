"""The canvas, camera and renderer of the synthetic street scenes.

:mod:`.scenes` paints material ids back to front onto a :class:`Canvas`
through a pinhole :class:`Camera`; :func:`render` turns the painted canvas
into an image (textures, lighting, lens and sensor) and its train-id label.
"""
from dataclasses import dataclass
from typing import Tuple

import cv2
import numpy as np

from .layout import IGNORE


# Fixed-point shift of cv2's drawing functions: sub-pixel geometry keeps
# thin, distant objects (poles) from flickering between 0 and 2 pixels.
_SHIFT = 4
_ONE = 1 << _SHIFT


@dataclass(frozen=True)
class Material:
    """How one kind of surface looks: its class and colour statistics."""
    train_id: int
    rgb: Tuple[float, float, float]
    grain: float = 4.0  # per-pixel noise (asphalt, leaves)
    blotch: float = 0.0  # ~6 px variations (foliage clumps, stains)
    cloud: float = 0.0  # ~40 px variations (clouds, wear)
    tiles: float = 0.0  # paving-tile grid lines (negative: dark joints)
    haze: float = 0.0  # brightening from the top to the bottom of the image


class Canvas:
    """A map of material ids painted back to front, then rendered."""

    def __init__(self, height: int, width: int):
        self.ids = np.zeros((height, width), np.uint16)
        self.materials = [Material(IGNORE, (0, 0, 0))]
        self.shade = np.ones((height, width), np.float32)

    def add(self, material: Material) -> int:
        self.materials.append(material)
        return len(self.materials) - 1

    def polygon(self, points: np.ndarray, material: int) -> None:
        pts = np.round(np.asarray(points) * _ONE).astype(np.int32)
        cv2.fillPoly(self.ids, [pts], material, cv2.LINE_8, _SHIFT)

    def ellipse(self, centre, axes, material: int) -> None:
        centre = tuple(int(round(v * _ONE)) for v in centre)
        axes = tuple(max(1, int(round(v * _ONE))) for v in axes)
        cv2.ellipse(self.ids, centre, axes, 0, 0, 360, material, -1,
                    cv2.LINE_8, _SHIFT)

    def shadow(self, points: np.ndarray, darkness: float) -> None:
        pts = np.round(np.asarray(points) * _ONE).astype(np.int32)
        cv2.fillPoly(self.shade, [pts], 1.0 - darkness, cv2.LINE_8, _SHIFT)


class Camera:
    """Pinhole camera one unit above the ground, looking along +Z."""

    def __init__(self, height: int, width: int, rng: np.random.Generator):
        self.height, self.width = height, width
        self.horizon = rng.uniform(0.36, 0.46) * height
        self.vp_x = rng.uniform(0.42, 0.58) * width
        # The bottom image row sees the ground this far ahead.
        self.z_bottom = rng.uniform(2.6, 3.4)
        self.focal = (height - self.horizon) * self.z_bottom

    def project(self, x, y, z) -> np.ndarray:
        """Image points (N, 2) of 3D points: x right, y up, z ahead."""
        x, y, z = np.broadcast_arrays(*(np.asarray(v, np.float64)
                                        for v in (x, y, z)))
        scale = self.focal / z
        return np.stack([self.vp_x + x * scale,
                         self.horizon + (1.0 - y) * scale], axis=-1)

    def pixels_per_unit(self, z: float) -> float:
        return self.focal / z


# -------------------------------------------------------------- rendering
def _smooth_noise(rng, shape, cell):
    """Unit-variance noise with features about ``cell`` pixels wide."""
    height, width = shape
    small = rng.standard_normal((height // cell + 2, width // cell + 2))
    big = cv2.resize(small.astype(np.float32), (width, height),
                     interpolation=cv2.INTER_CUBIC)
    return big / max(float(big.std()), 1e-6)


def _tile_grid(shape, rng):
    height, width = shape
    period_y, period_x = rng.integers(5, 9), rng.integers(7, 12)
    rows = (np.arange(height) % period_y == 0)[:, None]
    cols = (np.arange(width) % period_x == 0)[None, :]
    return (rows | cols).astype(np.float32)


def render(canvas: Canvas, rng: np.random.Generator
           ) -> Tuple[np.ndarray, np.ndarray]:
    """Image (BGR uint8) and train-id label (uint8) of a painted canvas."""
    height, width = canvas.ids.shape
    table = canvas.materials

    def column(attr):
        return np.array([getattr(m, attr) for m in table], np.float32)

    ids = canvas.ids
    rgb = np.array([m.rgb for m in table], np.float32)[ids]
    texture = (column('grain')[ids] * rng.standard_normal(ids.shape)
               + column('blotch')[ids] * _smooth_noise(rng, ids.shape, 5)
               + column('cloud')[ids] * _smooth_noise(rng, ids.shape, 40)
               + column('tiles')[ids] * _tile_grid(ids.shape, rng)
               + column('haze')[ids] * (np.arange(height) / height)[:, None])
    image = _camera(rgb + texture[..., None], canvas.shade, rng)
    label = np.array([m.train_id for m in table], np.uint8)[ids]
    label[_class_borders(label)] = IGNORE
    return cv2.cvtColor(image, cv2.COLOR_RGB2BGR), label


def _camera(image, shade, rng) -> np.ndarray:
    """The lighting of the day and the camera: soft shadows, exposure,
    colour cast, lens blur, sensor noise; uint8 RGB."""
    shade = cv2.GaussianBlur(shade, (0, 0), 2.0)
    gain = rng.uniform(0.75, 1.2) * rng.uniform(0.92, 1.08, size=3)
    image = image * shade[..., None] * gain.astype(np.float32)
    image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.5, 1.0))
    image += rng.normal(0, rng.uniform(1.5, 4.0), image.shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def _class_borders(label: np.ndarray) -> np.ndarray:
    """A 1-pixel band where the class changes (blurred in the image)."""
    border = np.zeros(label.shape, bool)
    border[:, :-1] |= label[:, :-1] != label[:, 1:]
    border[:-1, :] |= label[:-1, :] != label[1:, :]
    return border
