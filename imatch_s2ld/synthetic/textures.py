"""Procedural textures (several families) and user textures loaded from a folder.

Every texture is an RGB ``uint8`` array of shape ``(h, w, 3)``. All families put a multi-scale
noise layer on top of their structure so that local features (SIFT, ...) find plenty of distinct,
non-repetitive detail at every scale.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from ..errors import InputError

FAMILIES = ("noise", "stripes", "bricks", "blobs", "text")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_FONTS = (
    cv2.FONT_HERSHEY_SIMPLEX,
    cv2.FONT_HERSHEY_DUPLEX,
    cv2.FONT_HERSHEY_COMPLEX,
    cv2.FONT_HERSHEY_TRIPLEX,
    cv2.FONT_HERSHEY_PLAIN,
)
_GLYPHS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789#&%@+=?"


def fractal_noise(
    h: int, w: int, rng: np.random.Generator, base_cells: int = 3, persistence: float = 0.65
) -> np.ndarray:
    """Multi-scale value noise in ``[0, 1]``: float32 ``(h, w)``.

    Built coarse to fine: white noise on a grid of ``base_cells`` cells across the longer side,
    then repeatedly upsampled by 2 (``pyrUp``, smooth) with fresh noise of amplitude
    ``persistence**k`` added, down to about two pixels per cell; finally resized to ``(w, h)``.
    """
    longest = max(h, w)
    gh = max(2, int(np.ceil(base_cells * h / longest)) + 1)
    gw = max(2, int(np.ceil(base_cells * w / longest)) + 1)
    acc = rng.random((gh, gw), dtype=np.float32)
    amp = 1.0
    while max(acc.shape) * 2 <= longest // 2 + 2:
        amp *= persistence
        acc = cv2.pyrUp(acc)
        acc += (amp * 2) * (rng.random(acc.shape, dtype=np.float32) - 0.5)
    acc = cv2.resize(acc, (w, h), interpolation=cv2.INTER_CUBIC)
    lo, hi = np.percentile(acc[:: max(1, h // 64), :: max(1, w // 64)], (1, 99))
    return np.clip((acc - lo) / max(hi - lo, 1e-6), 0.0, 1.0)


def random_palette(rng: np.random.Generator, n: int, saturation: float) -> np.ndarray:
    """``n`` random colours in ``[0, 1]``: float32 ``(n, 3)``; ``saturation`` 0 gives greys.

    Luminances are spread over ``[0.1, 0.95]`` (shuffled) so that the palette keeps contrast in
    grey level, which is what most feature detectors see.
    """
    colour = (1 - saturation) + saturation * rng.random((n, 3))
    lum = colour @ np.array([0.299, 0.587, 0.114])
    target = rng.permutation(np.linspace(0.1, 0.95, n)) if n > 1 else rng.uniform(0.1, 0.95, 1)
    return np.clip(colour * (target / lum)[:, None], 0, 1).astype(np.float32)


def colourize(field: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Map a scalar field in ``[0, 1]`` (h, w) through a palette (n, 3) to float32 (h, w, 3).

    The palette is interpolated into a 256-entry table; the field is quantised to 8 bits.
    """
    x = np.linspace(0, len(palette) - 1, 256)
    lut = np.stack([np.interp(x, np.arange(len(palette)), palette[:, c]) for c in range(3)], 1)
    idx = (np.clip(field, 0, 1) * 255 + 0.5).astype(np.uint8)
    return cv2.LUT(cv2.merge([idx, idx, idx]), lut.reshape(1, 256, 3).astype(np.float32))


def _noise_family(h: int, w: int, rng: np.random.Generator, sat: float) -> np.ndarray:
    field = fractal_noise(h, w, rng, base_cells=int(rng.integers(2, 6)), persistence=0.8)
    field = 0.5 + 0.5 * np.tanh(rng.uniform(2, 5) * (field - 0.5))  # sharper, marbled edges
    return colourize(field, random_palette(rng, 5, sat))


def add_speckles(img: np.ndarray, rng: np.random.Generator, sat: float) -> None:
    """Draw small random ellipses (2..16 texels) in place: blob-like detail for detectors."""
    h, w = img.shape[:2]
    n = int(250 * h * w / 512**2) + 10
    pal = random_palette(rng, 6, sat)
    centres = rng.integers(0, [w, h], size=(n, 2))
    radii = 1 + 7 * rng.random((n, 2)) ** 2
    angles = rng.uniform(0, 180, n)
    colours = pal[rng.integers(len(pal), size=n)]
    for k in range(n):
        axes = (int(radii[k, 0]), int(radii[k, 1]))
        colour = tuple(float(c) for c in colours[k])
        cv2.ellipse(
            img,
            (int(centres[k, 0]), int(centres[k, 1])),
            axes,
            float(angles[k]),
            0,
            360,
            colour,
            -1,
            cv2.LINE_AA,
        )


def _stripes_family(h: int, w: int, rng: np.random.Generator, sat: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(0.04, 0.15) * max(h, w)
    warp = fractal_noise(h, w, rng, base_cells=2) * period * rng.uniform(0.5, 2.0)
    phase = (np.cos(angle) * xx + np.sin(angle) * yy + warp) * (2 * np.pi / period)
    stripes = 0.5 + 0.5 * np.sign(np.sin(phase)) * np.abs(np.sin(phase)) ** 0.3
    pal = random_palette(rng, 2, sat)
    img = colourize(stripes.astype(np.float32), pal)
    return img * (0.6 + 0.4 * fractal_noise(h, w, rng)[..., None])


def _bricks_family(h: int, w: int, rng: np.random.Generator, sat: float) -> np.ndarray:
    img = np.empty((h, w, 3), np.float32)
    mortar = random_palette(rng, 1, sat * 0.3)[0]
    img[:] = mortar
    pal = random_palette(rng, 6, sat)
    bh = int(max(4, rng.uniform(0.03, 0.08) * h))
    gap = max(1, bh // 6)
    y, row = 0, 0
    while y < h:
        bw = int(max(8, bh * rng.uniform(1.6, 3.5)))
        x = -int(rng.integers(0, bw)) if row % 2 else 0
        while x < w:
            cw = int(bw * rng.uniform(0.7, 1.3))
            c = pal[rng.integers(len(pal))] * rng.uniform(0.7, 1.2)
            x0, x1 = max(x + gap, 0), min(x + cw, w)
            if x1 > x0:
                img[y + gap : y + bh, x0:x1] = c
            x += cw
        y += bh
        row += 1
    return img * (0.55 + 0.45 * fractal_noise(h, w, rng)[..., None])


def _blobs_family(h: int, w: int, rng: np.random.Generator, sat: float) -> np.ndarray:
    img = colourize(fractal_noise(h, w, rng), random_palette(rng, 3, sat))
    pal = random_palette(rng, 8, sat)
    n = int(60 * h * w / 512**2) + 20
    radii = (rng.pareto(1.5, n) + 1) * max(h, w) * 0.01
    for k in range(n):
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        axes = (int(min(radii[k], w / 3)), int(min(radii[k] * rng.uniform(0.3, 1.0), h / 3)))
        colour = tuple(float(c) for c in pal[rng.integers(len(pal))])
        cv2.ellipse(img, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1, cv2.LINE_AA)
    return img * (0.7 + 0.3 * fractal_noise(h, w, rng)[..., None])


def _text_family(h: int, w: int, rng: np.random.Generator, sat: float) -> np.ndarray:
    pal = random_palette(rng, 2, sat * 0.5)
    img = (colourize(fractal_noise(h, w, rng) * 0.3 + 0.35, pal) * 255).astype(np.uint8)
    ink = random_palette(rng, 4, sat) * 255  # putText draws on uint8 canvases only
    scale0 = max(h, w) / 512
    y = int(rng.integers(5, 20))
    while y < h:
        size = scale0 * rng.uniform(0.4, 1.4)
        line_h = int(30 * size) + 4
        x = int(rng.integers(-20, 20))
        while x < w:
            word = "".join(rng.choice(list(_GLYPHS), int(rng.integers(2, 9))))
            font = _FONTS[rng.integers(len(_FONTS))]
            colour = tuple(float(c) for c in ink[rng.integers(len(ink))])
            thick = max(1, int(size * rng.uniform(1, 3)))
            cv2.putText(img, word, (x, y + line_h), font, size, colour, thick, cv2.LINE_AA)
            x += int(len(word) * 20 * size + rng.uniform(10, 40) * size)
        y += line_h + int(rng.integers(0, 10))
    return img.astype(np.float32) / 255 * (0.75 + 0.25 * fractal_noise(h, w, rng)[..., None])


_BUILDERS: dict[str, Callable[[int, int, np.random.Generator, float], np.ndarray]] = {
    "noise": _noise_family,
    "stripes": _stripes_family,
    "bricks": _bricks_family,
    "blobs": _blobs_family,
    "text": _text_family,
}


def make_texture(
    family: str, size: tuple[int, int], rng: np.random.Generator, saturation: float = 0.6
) -> np.ndarray:
    """Procedural texture of a family: RGB uint8 ``(h, w, 3)`` for ``size = (w, h)``.

    A fine-scale noise layer is always mixed in so that every family has detail at every scale.
    """
    if family not in _BUILDERS:
        raise InputError(f"unknown texture family '{family}' (known: {', '.join(FAMILIES)})")
    w, h = size
    img = np.ascontiguousarray(_BUILDERS[family](h, w, rng, saturation), dtype=np.float32)
    if family != "text":
        add_speckles(img, rng, saturation)
    detail = fractal_noise(h, w, rng, base_cells=max(8, max(h, w) // 32), persistence=0.8)
    img = img * (0.8 + 0.4 * detail[..., None])
    return np.clip(img * 255.0, 0, 255).astype(np.uint8)


def load_texture_folder(folder: str | Path) -> list[np.ndarray]:
    """Read every image of a folder as RGB uint8 ``(h, w, 3)`` arrays (sorted by file name).

    Raises:
        InputError: the folder is missing, holds no image, or an image cannot be decoded.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"--textures {folder}: not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"--textures {folder}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    images = []
    for path in files:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None or min(img.shape[:2]) < 8:
            raise InputError(f"--textures {folder}: cannot read image {path.name}")
        images.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    return images


def crop_user_texture(
    image: np.ndarray, size: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
    """A random crop of a user texture with the aspect of ``size = (w, h)``, resized to it."""
    w, h = size
    ih, iw = image.shape[:2]
    scale = min(iw / w, ih / h) * rng.uniform(0.6, 1.0)
    cw, ch = max(2, int(w * scale)), max(2, int(h * scale))
    x0 = int(rng.integers(0, iw - cw + 1))
    y0 = int(rng.integers(0, ih - ch + 1))
    crop = image[y0 : y0 + ch, x0 : x0 + cw]
    interp = cv2.INTER_AREA if cw > w else cv2.INTER_CUBIC
    return cv2.resize(crop, (w, h), interpolation=interp)
