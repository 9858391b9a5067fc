"""Procedural street scenes seen from a car, with their train-id labels.

The scenes are drawn with a pinhole camera one unit (a camera height, about
1.5 m) above a flat ground: a road converging to the vanishing point,
sidewalks, building facades with windows or park sides with trees and grass,
poles with traffic signs, cars, pedestrians and the ego-vehicle's hood. Each
class has its own colour and texture, every image its own lighting, shadows,
noise and blur, so that a small network can learn it in minutes on a CPU but
not trivially. :mod:`.synthetic` writes them as a data set.
"""
from typing import Tuple

import numpy as np

from .canvas import Camera, Canvas, Material, render
from .layout import CLASSES, IGNORE

# The Cityscapes train ids of the classes drawn.
ROAD, SIDEWALK, BUILDING, POLE, SIGN = (CLASSES.index(name) for name in (
    'road', 'sidewalk', 'building', 'pole', 'traffic sign'))
VEGETATION, TERRAIN, SKY, PERSON, CAR = (CLASSES.index(name) for name in (
    'vegetation', 'terrain', 'sky', 'person', 'car'))


# --------------------------------------------------------------- palettes
def _jitter(rng, rgb, spread):
    return tuple(float(np.clip(c + rng.normal(0, spread), 0, 255))
                 for c in rgb)


def _pick(rng, palette):
    return palette[rng.integers(len(palette))]


FACADE_COLOURS = ((196, 176, 146), (156, 104, 84), (172, 170, 164),
                  (222, 212, 190), (128, 104, 92), (200, 160, 120))
CAR_COLOURS = ((190, 30, 30), (30, 60, 150), (228, 228, 228), (28, 28, 32),
               (158, 162, 168), (40, 86, 52), (205, 170, 40), (90, 40, 110))
CLOTH_COLOURS = ((200, 40, 40), (40, 60, 160), (30, 30, 30), (230, 230, 220),
                 (60, 130, 60), (220, 160, 30), (120, 60, 140), (240, 120, 40))
SKIN_COLOURS = ((232, 192, 162), (194, 142, 112), (122, 86, 62))


class Scene:
    """Draws one street scene onto a canvas, back to front."""

    def __init__(self, canvas: Canvas, camera: Camera,
                 rng: np.random.Generator):
        self.canvas, self.cam, self.rng = canvas, camera, rng
        self.z_near = camera.z_bottom * 0.5  # in front of the bottom row
        self.z_far = rng.uniform(45, 80)  # where the street ends
        self.road_left = -rng.uniform(1.8, 3.2)
        self.road_right = rng.uniform(1.8, 3.2)
        self.walk_width = rng.uniform(1.4, 2.4)
        self.materials = self._class_materials()

    def _class_materials(self) -> dict:
        rng, add = self.rng, self.canvas.add
        sky = ((110, 160, 222) if rng.random() < 0.75 else (176, 186, 198))
        walk = ((150, 142, 136) if rng.random() < 0.6 else (170, 124, 108))
        grass = ((146, 160, 74) if rng.random() < 0.7 else (168, 164, 92))
        return dict(
            sky=add(Material(SKY, _jitter(rng, sky, 8), grain=1.5, cloud=14,
                             haze=rng.uniform(60, 110))),
            road=add(Material(ROAD, _jitter(rng, (84, 84, 90), 7), grain=7,
                              blotch=2, cloud=6, haze=25)),
            marking=add(Material(ROAD, _jitter(rng, (222, 222, 214), 6),
                                 grain=5)),
            walk=add(Material(SIDEWALK, _jitter(rng, walk, 8), grain=5,
                              cloud=5, tiles=-22)),
            curb=add(Material(SIDEWALK, _jitter(rng, (182, 180, 176), 6))),
            grass=add(Material(TERRAIN, _jitter(rng, grass, 8), grain=9,
                               blotch=6, cloud=4)),
            leaves=add(Material(VEGETATION, _jitter(rng, (64, 108, 42), 8),
                                grain=12, blotch=22, cloud=6)),
            trunk=add(Material(VEGETATION, _jitter(rng, (88, 68, 50), 6),
                               grain=6)),
            pole=add(Material(POLE, _jitter(rng, (112, 116, 122), 10),
                              grain=3)),
            hood=add(Material(IGNORE, _jitter(rng, (30, 32, 36), 4),
                              grain=2)),
        )

    # ----------------------------------------------------------- helpers
    def _building_material(self) -> int:
        rgb = _jitter(self.rng, _pick(self.rng, FACADE_COLOURS), 10)
        return self.canvas.add(Material(BUILDING, rgb, grain=4, blotch=5,
                                        cloud=4))

    def _ground(self, x0, x1, z0, z1, material):
        corners = self.cam.project([x0, x1, x1, x0], 0, [z0, z0, z1, z1])
        self.canvas.polygon(corners, material)

    def _wall(self, x, z0, z1, y0, y1, material):
        """A vertical plane along the street (a facade, a hedge)."""
        corners = self.cam.project(x, [y0, y0, y1, y1], [z0, z1, z1, z0])
        self.canvas.polygon(corners, material)

    def _front(self, x0, x1, y0, y1, z, material):
        """A rectangle facing the camera at depth z."""
        corners = self.cam.project([x0, x1, x1, x0], [y0, y0, y1, y1], z)
        self.canvas.polygon(corners, material)

    # ------------------------------------------------------------ layers
    def draw(self) -> None:
        height, width = self.canvas.ids.shape
        sky = np.array([[0, 0], [width, 0], [width, height], [0, height]])
        self.canvas.polygon(sky, self.materials['sky'])
        self._draw_backdrop()
        self._draw_ground()
        sides = [self._draw_side(sign) for sign in (-1, 1)]
        self._draw_objects(sides)
        if self.rng.random() < 0.5:
            self._draw_hood()

    def _draw_backdrop(self):
        """Buildings and trees across the far end of the street."""
        z, x = self.z_far, -60.0
        while x < 60:
            width = self.rng.uniform(4, 14)
            if self.rng.random() < 0.7:
                top = self.rng.uniform(4, 14)
                self._front(x, x + width, 0, top, z, self._building_material())
            else:
                self._draw_treeline(x, x + width, z)
            x += width

    def _draw_treeline(self, x0, x1, z):
        leaves = self.materials['leaves']
        self._front(x0, x1, 0, self.rng.uniform(2, 4), z, leaves)
        for cx in np.arange(x0, x1, 1.5):
            centre = self.cam.project(cx, self.rng.uniform(3, 5), z)
            radius = self.rng.uniform(1.2, 2.2) * self.cam.pixels_per_unit(z)
            self.canvas.ellipse(centre, (radius, radius * 0.9), leaves)

    def _draw_ground(self):
        z0, z1 = self.z_near, self.z_far
        rl, rr, walk = self.road_left, self.road_right, self.walk_width
        self._ground(-80, 80, z0, z1, self.materials['grass'])
        self._ground(rl - walk, rr + walk, z0, z1, self.materials['walk'])
        self._ground(rl - 0.15, rl, z0, z1, self.materials['curb'])
        self._ground(rr, rr + 0.15, z0, z1, self.materials['curb'])
        self._ground(rl, rr, z0, z1, self.materials['road'])
        self._draw_markings()
        if self.rng.random() < 0.6:  # a building's shadow across the street
            side = self.rng.choice([-1, 1])
            reach = self.rng.uniform(0.2, 0.8) * (rr - rl)
            x_edge = rl if side < 0 else rr
            x_shadow = x_edge - side * reach
            z_a = self.rng.uniform(z0, 15)
            z_b = z_a + self.rng.uniform(5, 30)
            corners = self.cam.project(
                [x_edge + side * walk, x_shadow, x_shadow,
                 x_edge + side * walk], 0, [z_a, z_a, z_b, z_b])
            self.canvas.shadow(corners, self.rng.uniform(0.25, 0.45))

    def _draw_markings(self):
        x = self.rng.uniform(-0.3, 0.3) * (self.road_right - self.road_left)
        x += (self.road_left + self.road_right) / 2
        dash, gap = self.rng.uniform(2, 4), self.rng.uniform(3, 6)
        z = self.z_near + self.rng.uniform(0, gap)
        while z < self.z_far:
            self._ground(x - 0.08, x + 0.08, z, z + dash,
                         self.materials['marking'])
            z += dash + gap

    def _draw_side(self, sign: int) -> dict:
        """Buildings (or a park) along one side; returns its geometry."""
        curb = self.road_left if sign < 0 else self.road_right
        walk_edge = curb + sign * self.walk_width
        park = self.rng.random() < 0.35
        # Grass between the sidewalk and the houses, always before a park.
        grass_width = self.rng.uniform(1.5, 5) \
            if park or self.rng.random() < 0.5 else 0.0
        front = walk_edge + sign * grass_width
        if park:
            self._draw_park(front)
        else:
            self._draw_facades(front)
        return dict(curb=curb, walk_edge=walk_edge, front=front, sign=sign)

    def _draw_facades(self, x):
        z = self.z_near
        while z < self.z_far:
            length = self.rng.uniform(6, 18)
            z1 = min(z + length, self.z_far)
            top = self.rng.uniform(4, 11)
            self._wall(x, z, z1, 0, top, self._building_material())
            self._draw_windows(x, z, z1, top)
            z = z1

    def _draw_windows(self, x, z0, z1, top):
        glass = self.canvas.add(Material(
            BUILDING, _jitter(self.rng, (58, 68, 84), 10), grain=6, blotch=4))
        floor = self.rng.uniform(1.7, 2.1)
        spacing = self.rng.uniform(1.3, 2.0)
        win_h, win_w = floor * 0.5, spacing * 0.5
        for y in np.arange(floor * 0.6, top - floor * 0.5, floor):
            for z in np.arange(z0 + spacing * 0.5, z1 - win_w, spacing):
                if self.cam.pixels_per_unit(z) * win_w < 1.5:
                    break  # too far away to see: the rest of this row too
                self._wall(x, z, z + win_w, y, y + win_h, glass)

    def _draw_park(self, x):
        leaves = self.materials['leaves']
        self._wall(x, self.z_near, self.z_far, 0, self.rng.uniform(0.8, 1.6),
                   leaves)
        sign = np.sign(x)
        for z in np.arange(self.z_near + 2, self.z_far,
                           self.rng.uniform(4, 8)):
            self._draw_tree(x + sign * self.rng.uniform(0.5, 2), z)

    def _draw_tree(self, x, z):
        unit = self.cam.pixels_per_unit(z)
        trunk_top = self.rng.uniform(1.6, 2.6)
        self._front(x - 0.12, x + 0.12, 0, trunk_top + 0.5, z,
                    self.materials['trunk'])
        for _ in range(self.rng.integers(4, 8)):
            height = trunk_top + self.rng.uniform(0.6, 2.2)
            centre = self.cam.project(x + self.rng.uniform(-1, 1), height, z)
            radius = self.rng.uniform(0.7, 1.3) * unit
            self.canvas.ellipse(centre, (radius, radius * 0.85),
                                self.materials['leaves'])

    def _draw_objects(self, sides):
        """Trees, poles, pedestrians and cars, far to near (occlusion)."""
        rng = self.rng
        objects = []
        for side in sides:
            sign, curb = side['sign'], side['curb']
            walk_edge = side['walk_edge']
            for _ in range(rng.integers(1, 4)):
                objects.append((rng.uniform(5, 22), self._draw_pole,
                                curb + sign * 0.35))
            for _ in range(rng.integers(1, 4)):
                x = rng.uniform(min(curb, walk_edge), max(curb, walk_edge))
                objects.append((rng.uniform(5, 16), self._draw_person, x))
            if side['front'] != walk_edge or rng.random() < 0.3:
                for _ in range(rng.integers(0, 3)):
                    x = walk_edge - sign * 0.6
                    objects.append((rng.uniform(6, 30), self._draw_tree, x))
        lanes = np.linspace(self.road_left + 1, self.road_right - 1, 3)
        for _ in range(rng.integers(1, 5)):
            objects.append((rng.uniform(4.5, 25), self._draw_car,
                            rng.choice(lanes) + rng.uniform(-0.3, 0.3)))
        if rng.random() < 0.3:  # someone crossing the street
            x = rng.uniform(self.road_left, self.road_right)
            objects.append((rng.uniform(6, 15), self._draw_person, x))
        for z, draw, x in sorted(objects, key=lambda o: -o[0]):
            draw(x, z)

    def _draw_pole(self, x, z):
        height = self.rng.uniform(2.8, 4.2)
        self._front(x - 0.14, x + 0.14, 0, height, z,
                    self.materials['pole'])
        if self.rng.random() < 0.75:
            self._draw_sign(x, height - 0.35, z)

    def _draw_sign(self, x, y, z):
        """A round, triangular or square traffic sign centred at (x, y)."""
        rng, unit = self.rng, self.cam.pixels_per_unit(z)
        size = rng.uniform(0.45, 0.6)
        kind = rng.integers(3)
        outer_rgb, inner_rgb = [((200, 30, 35), (236, 236, 236)),
                                ((30, 70, 170), (236, 236, 236)),
                                ((236, 236, 236), (230, 180, 30))][kind]
        outer = self.canvas.add(
            Material(SIGN, _jitter(rng, outer_rgb, 8), grain=3))
        inner = self.canvas.add(
            Material(SIGN, _jitter(rng, inner_rgb, 8), grain=3))
        centre = self.cam.project(x, y, z)
        radius = size * unit
        if kind == 0:  # prohibitory: red ring
            self.canvas.ellipse(centre, (radius, radius), outer)
            self.canvas.ellipse(centre, (radius * 0.7, radius * 0.7), inner)
        elif kind == 1:  # information: blue square
            self._front(x - size, x + size, y - size, y + size, z, outer)
            self._front(x - size * 0.3, x + size * 0.3, y - size * 0.5,
                        y + size * 0.5, z, inner)
        else:  # priority road: yellow diamond
            diamond = np.array([[0, -1], [1, 0], [0, 1], [-1, 0]])
            self.canvas.polygon(centre + diamond * radius * 1.2, outer)
            self.canvas.polygon(centre + diamond * radius * 0.8, inner)

    def _draw_person(self, x, z):
        rng = self.rng
        height = rng.uniform(1.05, 1.25)
        width = height * 0.34
        legs = self.canvas.add(Material(
            PERSON, _jitter(rng, (44, 46, 64), 12)))
        cloth = self.canvas.add(Material(
            PERSON, _jitter(rng, _pick(rng, CLOTH_COLOURS), 12), grain=5))
        skin = self.canvas.add(Material(
            PERSON, _jitter(rng, _pick(rng, SKIN_COLOURS), 6), grain=3))
        stride = rng.uniform(0, 0.08)
        self._front(x - width * 0.45 - stride, x - 0.01, 0, height * 0.5, z,
                    legs)
        self._front(x + 0.01, x + width * 0.45 + stride, 0, height * 0.5, z,
                    legs)
        self._front(x - width / 2, x + width / 2, height * 0.46,
                    height * 0.83, z, cloth)
        unit = self.cam.pixels_per_unit(z)
        head = self.cam.project(x, height * 0.91, z)
        self.canvas.ellipse(head, (height * 0.065 * unit,
                                   height * 0.085 * unit), skin)

    def _draw_car(self, x, z):
        rng = self.rng
        width, length = rng.uniform(1.15, 1.35), rng.uniform(2.8, 3.4)
        body_rgb = _jitter(rng, _pick(rng, CAR_COLOURS), 8)
        body = self.canvas.add(Material(CAR, body_rgb, grain=3, cloud=3))
        shaded = tuple(c * 0.75 for c in body_rgb)
        side = self.canvas.add(Material(CAR, shaded, grain=3))
        glass = self.canvas.add(Material(CAR, (40, 48, 58)))
        black = self.canvas.add(Material(CAR, (18, 18, 20), grain=2))
        light = self.canvas.add(Material(CAR, (215, 35, 35), grain=3))
        x0, x1 = x - width / 2, x + width / 2
        # The shadow under the car darkens the road, not the car.
        self.canvas.shadow(self.cam.project([x0 - 0.1, x1 + 0.1, x1 + 0.1,
                                             x0 - 0.1], 0,
                                            [z, z, z + length, z + length]),
                           0.5)
        # The side facing the camera, seen past the rear.
        near_x = x0 if x0 > 0 else x1 if x1 < 0 else None
        if near_x is not None:
            self._wall(near_x, z, z + length, 0.15, 0.75, side)
            self._wall(near_x, z + 0.5, z + length - 0.7, 0.75, 1.0, side)
            self._wall(near_x, z + 0.6, z + length - 0.8, 0.78, 0.95, glass)
            for wheel_z in (z + 0.6, z + length - 0.6):
                centre = self.cam.project(near_x, 0.22, wheel_z)
                radius = 0.22 * self.cam.pixels_per_unit(wheel_z)
                self.canvas.ellipse(centre, (radius * 0.5, radius), black)
        # The rear: tyres, bumper and trunk, cabin with the rear window.
        self._front(x0 + 0.05, x0 + 0.25, 0, 0.2, z, black)
        self._front(x1 - 0.25, x1 - 0.05, 0, 0.2, z, black)
        self._front(x0, x1, 0.12, 0.62, z, body)
        self._front(x0 + 0.1, x1 - 0.1, 0.62, 0.98, z, body)
        self._front(x0 + 0.18, x1 - 0.18, 0.66, 0.92, z, glass)
        self._front(x0 + 0.04, x0 + 0.2, 0.42, 0.52, z, light)
        self._front(x1 - 0.2, x1 - 0.04, 0.42, 0.52, z, light)
        self._front(x0 + 0.05, x1 - 0.05, 0.12, 0.2, z, black)

    def _draw_hood(self):
        """The ego-vehicle's hood, which Cityscapes labels as ignore."""
        height, width = self.canvas.ids.shape
        rise = self.rng.uniform(0.04, 0.09) * height
        centre = (self.cam.vp_x, height + width * 0.6 - rise)
        self.canvas.ellipse(centre, (width * 0.9, width * 0.6),
                            self.materials['hood'])


def draw_street_scene(size: Tuple[int, int], rng: np.random.Generator
                      ) -> Tuple[np.ndarray, np.ndarray]:
    """One synthetic street scene: (BGR image, train-id label), HxW."""
    height, width = size
    canvas = Canvas(height, width)
    Scene(canvas, Camera(height, width, rng), rng).draw()
    return render(canvas, rng)
