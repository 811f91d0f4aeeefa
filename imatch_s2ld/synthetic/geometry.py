"""Planar textured rectangles ("quads") and helpers that build faces, tiled walls and boxes.

World frame: metres, ``z`` up. A quad is ``origin + s * edge_s + t * edge_t`` for
``(s, t)`` in ``[0, 1]^2``; ``(s, t)`` are also its texture coordinates (``s`` along texture
columns, ``t`` along rows). Seen from its front side, ``edge_s`` points right and ``edge_t`` down,
so ``cross(edge_s, edge_t)`` points *into* the surface; the front normal is its negative.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class QuadList:
    """Growing list of quads with a texture request each (size in texels and a family tag)."""

    origins: list[np.ndarray] = field(default_factory=list)
    edges_s: list[np.ndarray] = field(default_factory=list)
    edges_t: list[np.ndarray] = field(default_factory=list)
    tex_sizes: list[tuple[int, int]] = field(default_factory=list)
    groups: list[int] = field(default_factory=list)  # quads of one face share a texture family
    _next_group: int = 0

    def new_group(self) -> int:
        """A fresh group id (one per face, so that its tiles share a texture family)."""
        self._next_group += 1
        return self._next_group - 1

    def add(
        self, origin: np.ndarray, edge_s: np.ndarray, edge_t: np.ndarray, density: float, group: int
    ) -> None:
        """Add one quad; its texture gets ``density`` texels per metre (clamped to 32..768)."""
        w = int(np.clip(np.linalg.norm(edge_s) * density, 32, 768))
        h = int(np.clip(np.linalg.norm(edge_t) * density, 32, 768))
        self.origins.append(np.asarray(origin, np.float64))
        self.edges_s.append(np.asarray(edge_s, np.float64))
        self.edges_t.append(np.asarray(edge_t, np.float64))
        self.tex_sizes.append((w, h))
        self.groups.append(group)

    def __len__(self) -> int:
        return len(self.origins)


def face_frame(normal: np.ndarray, up: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit ``(right, down)`` directions of a face seen from the front (normal towards viewer)."""
    n = normal / np.linalg.norm(normal)
    right = np.cross(up, n)
    right /= np.linalg.norm(right)
    down = np.cross(right, n)  # = -up projected on the face
    return right, down


def add_face(
    quads: QuadList,
    centre: np.ndarray,
    normal: np.ndarray,
    up: np.ndarray,
    width: float,
    height: float,
    max_tile: float,
    density: float,
) -> None:
    """Add a rectangular face (front normal ``normal``) split into tiles of at most ``max_tile``.

    Each tile gets its own texture so large faces keep fine detail without repeating.
    """
    right, down = face_frame(np.asarray(normal, float), np.asarray(up, float))
    nx = max(1, int(np.ceil(width / max_tile - 1e-9)))
    ny = max(1, int(np.ceil(height / max_tile - 1e-9)))
    es, et = right * (width / nx), down * (height / ny)
    corner = np.asarray(centre, float) - right * width / 2 - down * height / 2
    group = quads.new_group()
    for iy in range(ny):
        for ix in range(nx):
            quads.add(corner + ix * es + iy * et, es, et, density, group)


def add_box(
    quads: QuadList,
    lo: np.ndarray,
    hi: np.ndarray,
    max_tile: float,
    density: float,
    faces: tuple[str, ...] = ("-x", "+x", "-y", "+y", "+z"),
) -> None:
    """Add an axis-aligned box ``[lo, hi]`` as outward-facing faces (no bottom by default)."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    c, size = (lo + hi) / 2, hi - lo
    z_up, y_up = np.array([0.0, 0.0, 1.0]), np.array([0.0, 1.0, 0.0])
    specs = {
        "-x": (np.array([-1.0, 0, 0]), z_up, size[1], size[2]),
        "+x": (np.array([1.0, 0, 0]), z_up, size[1], size[2]),
        "-y": (np.array([0, -1.0, 0]), z_up, size[0], size[2]),
        "+y": (np.array([0, 1.0, 0]), z_up, size[0], size[2]),
        "+z": (np.array([0, 0, 1.0]), y_up, size[0], size[1]),
        "-z": (np.array([0, 0, -1.0]), y_up, size[0], size[1]),
    }
    for name in faces:
        n, up, w, h = specs[name]
        add_face(quads, c + n * size / 2, n, up, w, h, max_tile, density)
