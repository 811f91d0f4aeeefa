"""A textured scene: quads (as arrays), one texture per quad, a light and camera hints."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .domain import Domain
from .layouts import LAYOUTS, CameraHints, build_facade, build_room
from .textures import crop_user_texture, make_texture


@dataclass(frozen=True)
class Scene:
    """Geometry and appearance of one synthetic scene.

    Attributes:
        name: scene name (folder name in the outputs).
        layout: ``"facade"`` or ``"room"``.
        origins, edges_s, edges_t: (Q, 3) quads ``origin + s * edge_s + t * edge_t``.
        normals: (Q, 3) unit front normals.
        textures: Q RGB uint8 textures ``(h, w, 3)``.
        light_dir: (3,) unit vector towards the (directional) light.
        hints: where cameras may go.
    """

    name: str
    layout: str
    origins: np.ndarray
    edges_s: np.ndarray
    edges_t: np.ndarray
    normals: np.ndarray
    textures: tuple[np.ndarray, ...]
    light_dir: np.ndarray
    hints: CameraHints

    def shade(self, domain: Domain) -> np.ndarray:
        """Lambertian light per quad: float32 (Q,)."""
        cos = np.clip(self.normals @ self.light_dir, 0.0, None)
        return (domain.ambient + domain.diffuse * cos).astype(np.float32)


def build_scene(
    layout: str,
    name: str,
    rng: np.random.Generator,
    domain: Domain,
    texture_density: float = 1.0,
    user_textures: Sequence[np.ndarray] | None = None,
) -> Scene:
    """Build a scene of a layout with textures drawn from ``domain`` (or ``user_textures``).

    Args:
        layout: one of :data:`LAYOUTS`.
        name: scene name.
        rng: random generator (the scene is a deterministic function of its state).
        domain: gives the texture family mix, saturation and light elevation.
        texture_density: multiplier on texels per metre (lower = faster, blurrier).
        user_textures: RGB uint8 images; when given, random crops of them replace procedural ones.
    """
    if layout not in LAYOUTS:
        raise InputError(f"unknown layout '{layout}' (known: {', '.join(LAYOUTS)})")
    builder = build_facade if layout == "facade" else build_room
    quads, hints = builder(rng, texture_density)
    origins = np.stack(quads.origins)
    edges_s, edges_t = np.stack(quads.edges_s), np.stack(quads.edges_t)
    normals = -np.cross(edges_s, edges_t)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    families = {g: domain.pick_family(rng) for g in sorted(set(quads.groups))}
    textures = []
    for size, group in zip(quads.tex_sizes, quads.groups):
        if user_textures:
            img = user_textures[int(rng.integers(len(user_textures)))]
            textures.append(crop_user_texture(img, size, rng))
        else:
            textures.append(make_texture(families[group], size, rng, domain.saturation))
    elev = np.deg2rad(rng.uniform(*domain.sun_elevation_deg))
    azim = rng.uniform(0, 2 * np.pi)
    light = np.array([np.cos(elev) * np.cos(azim), np.cos(elev) * np.sin(azim), np.sin(elev)])
    if layout == "room":  # light from the ceiling region: mostly downwards onto the floor
        light[2] = abs(light[2])
    return Scene(name, layout, origins, edges_s, edges_t, normals, tuple(textures), light, hints)
