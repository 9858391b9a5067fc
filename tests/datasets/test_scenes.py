"""The synthetic street scenes: what is drawn where."""
import numpy as np

from repvgg_seg.datasets.canvas import Camera, Canvas
from repvgg_seg.datasets.scenes import Scene


def _glass_heights(size, x, z0, z1, top, seed=0):
    """Heights above the ground (camera heights) of the window pixels of
    one facade at ``x`` from ``z0`` to ``z1``, ``top`` high."""
    rng = np.random.default_rng(seed)
    canvas = Canvas(*size)
    cam = Camera(*size, rng)
    scene = Scene(canvas, cam, rng)
    scene._draw_windows(x, z0, z1, top)
    glass = len(canvas.materials) - 1  # the last material added
    rows, cols = np.nonzero(canvas.ids == glass)
    # back through the camera: a column is a depth on the wall's plane, a
    # row a height at that depth
    z = x * cam.focal / (cols + 0.5 - cam.vp_x)
    return 1.0 - (rows + 0.5 - cam.horizon) * z / cam.focal


def test_upper_floors_get_windows():
    """A facade long enough that its far windows are too small to draw
    still gets windows on its upper floors, not only on the first."""
    heights = _glass_heights((128, 256), x=-3.0, z0=3.0, z1=300.0, top=10.0)
    # floors are 1.7-2.1 high, the first windows 0.6 floor up, half a
    # floor high: first-floor windows end below 2.31
    assert heights.min() < 2.0
    assert heights.max() > 6.0, heights.max()
