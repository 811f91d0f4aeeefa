"""Appearance "domains": texture mix, lighting, exposure, blur, noise, fog, colour cast.

A :class:`Domain` only changes how a rendered view looks; geometry, depth and poses never depend
on it. :func:`apply_domain` turns the renderer's albedo + per-quad shading into the final image.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cache
from statistics import NormalDist

import cv2
import numpy as np

from ..conf import reject_unknown
from ..errors import InputError
from .textures import FAMILIES

RGB = tuple[float, float, float]


@dataclass(frozen=True)
class Domain:
    """Appearance knobs (intensities in ``[0, 1]`` linear units, lengths in pixels/metres).

    Attributes:
        texture_mix: ``(family, weight)`` pairs used to pick a texture family per face.
        saturation: colourfulness of procedural palettes (0 = grey).
        ambient, diffuse: Lambertian shading ``ambient + diffuse * max(0, n.l)`` per plane.
        sun_elevation_deg: range of the light elevation (azimuth is random per scene).
        headlight: extra light carried by the camera, ``headlight / (1 + (z / 4 m)^2)``.
        exposure: global gain; ``exposure_jitter`` is the std of a per-view log-gain.
        gamma: output encoding ``out = in ** (1 / gamma)``.
        blur_sigma: Gaussian blur (px); ``motion_blur``: maximum motion-blur length (px) per view.
        noise_sigma: Gaussian read noise std; ``shot_noise``: Poisson-like variance per intensity.
        fog_density: fog extinction per metre of depth; ``fog_colour`` the colour it fades to.
        colour_cast: per-channel RGB gains.
        sky_top, sky_bottom: sky gradient where nothing is hit (depth 0).
    """

    texture_mix: tuple[tuple[str, float], ...] = (
        ("noise", 1.0),
        ("stripes", 0.7),
        ("bricks", 1.0),
        ("blobs", 1.0),
        ("text", 0.8),
    )
    saturation: float = 0.6
    ambient: float = 0.5
    diffuse: float = 0.6
    sun_elevation_deg: tuple[float, float] = (25.0, 65.0)
    headlight: float = 0.0
    exposure: float = 1.0
    exposure_jitter: float = 0.08
    gamma: float = 1.0
    blur_sigma: float = 0.0
    motion_blur: float = 0.0
    noise_sigma: float = 0.004
    shot_noise: float = 0.0
    fog_density: float = 0.0
    fog_colour: RGB = (0.75, 0.77, 0.8)
    colour_cast: RGB = (1.0, 1.0, 1.0)
    sky_top: RGB = (0.35, 0.55, 0.9)
    sky_bottom: RGB = (0.75, 0.85, 0.95)

    def __post_init__(self) -> None:
        for family, weight in self.texture_mix:
            if family not in FAMILIES:
                raise InputError(f"domain texture_mix: unknown family '{family}'")
            if weight < 0:
                raise InputError(f"domain texture_mix: negative weight for '{family}'")
        if sum(w for _, w in self.texture_mix) <= 0:
            raise InputError("domain texture_mix: weights must not all be zero")
        if self.gamma <= 0 or self.exposure <= 0:
            raise InputError("domain: gamma and exposure must be positive")

    def replace(self, **changes: object) -> Domain:
        """A copy with some fields changed; unknown field names raise :class:`InputError`."""
        reject_unknown(changes, (f.name for f in dataclasses.fields(self)), "domain")
        fixed = {k: tuple(map(tuple, v)) if k == "texture_mix" else v for k, v in changes.items()}
        fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in fixed.items()}
        return dataclasses.replace(self, **fixed)

    def pick_family(self, rng: np.random.Generator) -> str:
        """Draw a texture family according to ``texture_mix``."""
        names = [f for f, _ in self.texture_mix]
        weights = np.array([w for _, w in self.texture_mix], float)
        return names[int(rng.choice(len(names), p=weights / weights.sum()))]


@cache
def _gauss_table() -> np.ndarray:
    """256 quantiles of N(0, 1), rescaled to unit variance: (1, 256) float32 for ``cv2.LUT``."""
    inv_cdf = NormalDist().inv_cdf
    q = np.array([inv_cdf((k + 0.5) / 256) for k in range(256)])
    return (q / q.std()).astype(np.float32).reshape(1, 256)


def gaussian_noise(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
    """Approximately standard normal float32 samples of ``shape`` (H, W, C).

    Random bytes mapped through a 256-level quantile table: fast, and exact enough for sensor
    noise (unit variance, tails cut at 2.9 sigma).
    """
    idx = np.frombuffer(rng.bytes(int(np.prod(shape))), np.uint8).reshape(shape)
    return cv2.LUT(idx, _gauss_table())


def sky_image(domain: Domain, h: int, w: int) -> np.ndarray:
    """Vertical sky gradient float32 ``(h, w, 3)``."""
    a = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    top, bottom = np.asarray(domain.sky_top, np.float32), np.asarray(domain.sky_bottom, np.float32)
    return np.broadcast_to((1 - a) * top + a * bottom, (h, w, 3))


def apply_domain(
    albedo: np.ndarray,
    depth: np.ndarray,
    quad_id: np.ndarray,
    shade: np.ndarray,
    domain: Domain,
    rng: np.random.Generator,
) -> np.ndarray:
    """Shade, fog, expose, blur, add noise and encode a rendered view.

    ``out = encode(noise(blur(gain * cast * (albedo * light * (1 - f) + fog * f))))`` with
    ``f = 1 - exp(-fog_density * depth)`` (1 on the sky).

    Args:
        albedo: uint8 (H, W, 3) sampled textures.
        depth: float32 (H, W) camera z, 0 where nothing was hit.
        quad_id: int32 (H, W) index of the visible quad, -1 where nothing was hit.
        shade: float32 (Q,) light reaching each quad.
        domain: the appearance knobs.
        rng: per-view random generator (noise, exposure jitter, motion blur).

    Returns:
        RGB uint8 (H, W, 3).
    """
    h, w = depth.shape
    sky = quad_id < 0
    light = np.take(np.append(shade.astype(np.float32), np.float32(0.0)), quad_id)
    if domain.headlight > 0:
        light += np.float32(domain.headlight) / (1.0 + (depth * np.float32(0.25)) ** 2)
        light[sky] = 0.0
    fogged = domain.fog_density > 0
    if fogged:
        f = 1.0 - cv2.exp(depth * np.float32(-domain.fog_density))
        f[sky] = 1.0
        light *= 1.0 - f
    gain = domain.exposure * float(np.exp(rng.normal(0.0, domain.exposure_jitter)))
    cast = np.asarray(domain.colour_cast, np.float32) * np.float32(gain)
    light *= np.float32(1 / 255)
    img = albedo.astype(np.float32)
    img *= light[..., None]
    if fogged:
        img += f[..., None] * (np.asarray(domain.fog_colour, np.float32))
    elif sky.any():
        np.copyto(img, sky_image(domain, h, w), where=sky[..., None])
    img *= cast
    if domain.blur_sigma > 0:
        img = cv2.GaussianBlur(img, (0, 0), domain.blur_sigma)
    if domain.motion_blur > 0:
        img = _motion_blur(img, rng.uniform(0.3, 1.0) * domain.motion_blur, rng.uniform(0, np.pi))
    if domain.noise_sigma > 0 or domain.shot_noise > 0:
        noise = gaussian_noise(rng, img.shape)
        if domain.shot_noise > 0:  # Poisson-like: variance grows with the signal
            std = np.maximum(img, 0.0)
            std *= np.float32(domain.shot_noise)
            std += np.float32(domain.noise_sigma**2)
            cv2.sqrt(std, std)
            noise *= std
        else:
            noise *= np.float32(domain.noise_sigma)
        img += noise
    np.clip(img, 0.0, 1.0, out=img)
    if domain.gamma != 1.0:
        cv2.pow(img, 1.0 / domain.gamma, img)
    return cv2.convertScaleAbs(img, alpha=255.0)


def _motion_blur(img: np.ndarray, length: float, angle: float) -> np.ndarray:
    """Blur along a line of ``length`` px at ``angle`` (radians)."""
    k = int(np.ceil(length)) | 1
    if k < 3:
        return img
    kernel = np.zeros((k, k), np.float32)
    c = k // 2
    dx, dy = np.cos(angle) * length / 2, np.sin(angle) * length / 2
    cv2.line(
        kernel, (round(c - dx), round(c - dy)), (round(c + dx), round(c + dy)), 1.0, 1, cv2.LINE_AA
    )
    return cv2.filter2D(img, -1, kernel / kernel.sum(), borderType=cv2.BORDER_REFLECT)
