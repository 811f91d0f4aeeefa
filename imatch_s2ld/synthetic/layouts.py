"""Scene layouts: an outdoor street with building facades and an indoor room with furniture.

A layout returns the quads of the scene (textures are added later by :mod:`.scene`) and hints
for placing cameras: points worth looking at, the region where cameras may stand, obstacles
(footprints cameras must avoid) and a walkable path for videos.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .geometry import QuadList, add_box, add_face

LAYOUTS = ("facade", "room")
Z_UP = np.array([0.0, 0.0, 1.0])
Y_UP = np.array([0.0, 1.0, 0.0])


@dataclass(frozen=True)
class CameraHints:
    """Where cameras may go in a layout.

    Attributes:
        focus_points: (F, 3) surface points worth looking at.
        focus_normals: (F, 3) unit front normals at those points.
        eye_lo, eye_hi: (3,) box of allowed camera centres.
        obstacles: (O, 4) forbidden footprints ``x0, y0, x1, y1`` (camera centres avoid them).
        walk: (P, 3) closed or open polyline the video camera follows (smoothed later).
        walk_closed: whether ``walk`` is a loop.
        look_yaw: (P,) preferred yaw (radians, from +x towards +y) along the walk.
        distance: (min, max) camera-to-focus distance for wide-baseline views.
        has_sky: whether part of the view is empty (depth 0).
    """

    focus_points: np.ndarray
    focus_normals: np.ndarray
    eye_lo: np.ndarray
    eye_hi: np.ndarray
    obstacles: np.ndarray
    walk: np.ndarray
    walk_closed: bool
    look_yaw: np.ndarray
    distance: tuple[float, float]
    has_sky: bool


def build_facade(rng: np.random.Generator, density: float) -> tuple[QuadList, CameraHints]:
    """Street scene: ground tiles, two rows of buildings at different depths, street boxes, sky."""
    quads = QuadList()
    ground_density = 45 * density
    for gx in np.arange(-40.0, 40.0, 10.0):
        for gy in np.arange(-15.0, 45.0, 10.0):
            add_face(quads, np.array([gx + 5, gy + 5, 0.0]), Z_UP, Y_UP, 10, 10, 10, ground_density)
    focus, normals = [], []
    # Front row: facades facing the street (-y) at varying setbacks.
    x = -38.0
    setbacks = []
    while x < 36:
        width = rng.uniform(7, 15)
        y0 = rng.uniform(12, 19)
        height = rng.uniform(6, 22)
        depth = rng.uniform(8, 13)
        add_box(quads, [x, y0, 0], [x + width, y0 + depth, height], 8.0, 55 * density)
        setbacks.append(y0)
        for _ in range(2):
            focus.append([x + rng.uniform(0.2, 0.8) * width, y0, rng.uniform(2, min(height, 12))])
            normals.append([0, -1.0, 0])
        x += width + rng.uniform(0.0, 5.0)
    # Back row: taller buildings seen above and between the front row.
    x = -45.0
    while x < 45:
        width = rng.uniform(10, 20)
        y0 = rng.uniform(30, 38)
        height = rng.uniform(18, 40)
        add_box(
            quads,
            [x, y0, 0],
            [x + width, y0 + 10, height],
            10.0,
            30 * density,
            faces=("-x", "+x", "-y"),
        )
        x += width + rng.uniform(1.0, 6.0)
    # Street boxes (kiosks, vans, benches) between the cameras and the facades.
    street_front = min(setbacks) - 3.0
    obstacles = []
    for _ in range(int(rng.integers(3, 7))):
        cx, cy = rng.uniform(-28, 28), rng.uniform(3, street_front - 2)
        sx, sy, sz = rng.uniform(1.2, 4.5), rng.uniform(1.0, 2.5), rng.uniform(0.8, 3.0)
        add_box(
            quads, [cx - sx / 2, cy - sy / 2, 0], [cx + sx / 2, cy + sy / 2, sz], 3.0, 110 * density
        )
        obstacles.append(
            [cx - sx / 2 - 0.8, cy - sy / 2 - 0.8, cx + sx / 2 + 0.8, cy + sy / 2 + 0.8]
        )
        focus.append([cx, cy - sy / 2, sz / 2])
        normals.append([0, -1.0, 0])
    n_walk = 12
    walk = np.stack(
        [
            np.linspace(-25, 25, n_walk),
            rng.uniform(-6, 0, n_walk),
            1.6 + rng.uniform(-0.1, 0.1, n_walk),
        ],
        axis=1,
    )
    hints = CameraHints(
        focus_points=np.asarray(focus, float),
        focus_normals=np.asarray(normals, float),
        eye_lo=np.array([-32.0, -14.0, 1.3]),
        eye_hi=np.array([32.0, street_front, 9.0]),
        obstacles=np.asarray(obstacles, float).reshape(-1, 4),
        walk=walk,
        walk_closed=False,
        look_yaw=np.pi / 2 + rng.uniform(-0.6, 0.6, n_walk),
        distance=(7.0, 26.0),
        has_sky=True,
    )
    return quads, hints


def _place_furniture(
    rng: np.random.Generator, room_w: float, room_d: float, count: int
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Non-overlapping boxes standing against the walls: (lo, hi, front normal) each."""
    placed: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for _ in range(count * 20):
        if len(placed) == count:
            break
        wall = int(rng.integers(4))
        w, d, h = rng.uniform(0.6, 2.4), rng.uniform(0.4, 1.0), rng.uniform(0.4, 2.2)
        gap = rng.uniform(0.0, 0.15)
        if wall in (0, 1):  # along y = 0 or y = room_d
            x0 = rng.uniform(0.1, room_w - w - 0.1)
            y0 = gap if wall == 0 else room_d - gap - d
            lo, hi = np.array([x0, y0, 0]), np.array([x0 + w, y0 + d, h])
            normal = np.array([0, 1.0 if wall == 0 else -1.0, 0])
        else:  # along x = 0 or x = room_w
            y0 = rng.uniform(0.1, room_d - w - 0.1)
            x0 = gap if wall == 2 else room_w - gap - d
            lo, hi = np.array([x0, y0, 0]), np.array([x0 + d, y0 + w, h])
            normal = np.array([1.0 if wall == 2 else -1.0, 0, 0])
        if all(
            np.any(lo[:2] > q_hi[:2] + 0.1) or np.any(hi[:2] < q_lo[:2] - 0.1)
            for q_lo, q_hi, _ in placed
        ):
            placed.append((lo, hi, normal))
    return placed


def build_room(rng: np.random.Generator, density: float) -> tuple[QuadList, CameraHints]:
    """Indoor room: floor, ceiling, four walls, furniture boxes and posters; no sky."""
    room_w, room_d, room_h = rng.uniform(6, 10), rng.uniform(6, 11), rng.uniform(2.6, 3.4)
    dens, tile = 190 * density, 2.5
    quads = QuadList()
    add_face(quads, np.array([room_w / 2, room_d / 2, 0]), Z_UP, Y_UP, room_w, room_d, tile, dens)
    add_face(
        quads,
        np.array([room_w / 2, room_d / 2, room_h]),
        -Z_UP,
        Y_UP,
        room_w,
        room_d,
        tile,
        dens * 0.6,
    )
    walls = [  # (centre, inward normal, width)
        (np.array([room_w / 2, 0, room_h / 2]), np.array([0, 1.0, 0]), room_w),
        (np.array([room_w / 2, room_d, room_h / 2]), np.array([0, -1.0, 0]), room_w),
        (np.array([0, room_d / 2, room_h / 2]), np.array([1.0, 0, 0]), room_d),
        (np.array([room_w, room_d / 2, room_h / 2]), np.array([-1.0, 0, 0]), room_d),
    ]
    focus, normals = [], []
    for centre, normal, width in walls:
        add_face(quads, centre, normal, Z_UP, width, room_h, tile, dens)
        along = np.cross(Z_UP, normal)
        for _ in range(int(rng.integers(1, 3))):  # posters a little in front of the wall
            pw, ph = rng.uniform(0.5, 1.6), rng.uniform(0.4, 1.2)
            off = rng.uniform(-(width - pw) / 2 + 0.2, (width - pw) / 2 - 0.2)
            pc = (
                centre
                + along * off
                + normal * 0.02
                + Z_UP * rng.uniform(0.0, room_h / 2 - ph / 2 - 0.1)
            )
            add_face(quads, pc, normal, Z_UP, pw, ph, tile, dens * 1.5)
        for _ in range(3):
            focus.append(
                centre + along * rng.uniform(-0.35, 0.35) * width + Z_UP * rng.uniform(-0.8, 0.8)
            )
            normals.append(normal)
    obstacles = []
    for lo, hi, normal in _place_furniture(rng, room_w, room_d, int(rng.integers(4, 9))):
        add_box(quads, lo, hi, tile, dens * 1.2)
        obstacles.append([lo[0] - 0.4, lo[1] - 0.4, hi[0] + 0.4, hi[1] + 0.4])
        front = (lo + hi) / 2 + normal * np.abs(hi - lo) / 2
        focus.append(np.array([front[0], front[1], hi[2] * 0.6]))
        normals.append(normal)
    ang = np.linspace(0, 2 * np.pi, 10, endpoint=False)
    rx, ry = max(0.3, room_w / 2 - 2.0), max(0.3, room_d / 2 - 2.0)
    walk = np.stack(
        [
            room_w / 2 + rx * np.cos(ang) * rng.uniform(0.8, 1.0, 10),
            room_d / 2 + ry * np.sin(ang) * rng.uniform(0.8, 1.0, 10),
            1.5 + rng.uniform(-0.15, 0.15, 10),
        ],
        axis=1,
    )
    hints = CameraHints(
        focus_points=np.asarray(focus, float),
        focus_normals=np.asarray(normals, float),
        eye_lo=np.array([1.0, 1.0, 0.9]),
        eye_hi=np.array([room_w - 1.0, room_d - 1.0, min(2.1, room_h - 0.4)]),
        obstacles=np.asarray(obstacles, float).reshape(-1, 4),
        walk=walk,
        walk_closed=True,
        look_yaw=ang + 1.0 + rng.uniform(-0.4, 0.4, 10),  # between outward and along the loop
        distance=(1.8, 6.0),
        has_sky=False,
    )
    return quads, hints
