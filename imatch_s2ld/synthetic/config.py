"""Generator configuration (frozen dataclass), named presets and strict override merging."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from ..conf import reject_unknown
from ..errors import InputError
from .domain import Domain
from .layouts import LAYOUTS


@dataclass(frozen=True)
class GeneratorConfig:
    """What to generate.

    Attributes:
        layouts: layouts cycled over the scenes (``"facade"``, ``"room"``).
        num_scenes: number of scenes.
        views: wide-baseline views per scene written in the MegaDepth layout (0 = none).
        size: image ``(width, height)``.
        hfov_deg: horizontal field of view.
        overlap_bins: ``(min, max)`` overlap ranges; pairs outside every bin are dropped.
        max_pairs_per_bin: cap on pairs kept per bin and scene.
        video_frames: frames of the per-scene video (0 = no video).
        video_step: camera motion per frame in metres (``None``: 0.12 outdoors, 0.04 indoors).
        eval_views: wide-baseline views rendered next to each video for held-out evaluation pairs.
        texture_density: multiplier on texels per metre.
        textures: folder of user texture images (``None``: procedural textures).
        jpeg_quality: quality of the MegaDepth-layout JPEGs.
        domain: appearance knobs.
    """

    layouts: tuple[str, ...] = ("facade", "room")
    num_scenes: int = 2
    views: int = 12
    size: tuple[int, int] = (640, 480)
    hfov_deg: float = 65.0
    overlap_bins: tuple[tuple[float, float], ...] = ((0.1, 0.3), (0.3, 0.5), (0.5, 0.7), (0.7, 1.0))
    max_pairs_per_bin: int = 25
    video_frames: int = 0
    video_step: float | None = None
    eval_views: int = 0
    texture_density: float = 1.0
    textures: str | None = None
    jpeg_quality: int = 95
    domain: Domain = field(default_factory=Domain)

    def __post_init__(self) -> None:
        for name in self.layouts:
            if name not in LAYOUTS:
                raise InputError(f"layouts: unknown layout '{name}' (known: {', '.join(LAYOUTS)})")
        if not self.layouts:
            raise InputError("layouts: at least one layout is needed")
        checks = {
            "num_scenes": self.num_scenes >= 1,
            "views": self.views >= 0 and self.views != 1,
            "video_frames": self.video_frames >= 0,
            "eval_views": self.eval_views >= 0 and self.eval_views != 1,
            "size": len(self.size) == 2 and min(self.size) >= 16,
            "hfov_deg": 10 <= self.hfov_deg <= 150,
            "texture_density": self.texture_density > 0,
            "jpeg_quality": 1 <= self.jpeg_quality <= 100,
            "max_pairs_per_bin": self.max_pairs_per_bin >= 1,
        }
        for key, ok in checks.items():
            if not ok:
                raise InputError(f"bad value for '{key}': {getattr(self, key)!r}")
        if self.views == 0 and self.video_frames == 0:
            raise InputError("nothing to generate: 'views' and 'video_frames' are both 0")


_TARGET_FOG = Domain(
    texture_mix=(("blobs", 1.0), ("text", 1.0), ("noise", 0.3)),
    saturation=0.35,
    ambient=0.65,
    diffuse=0.3,
    exposure=0.95,
    gamma=1.15,
    blur_sigma=1.2,
    noise_sigma=0.02,
    shot_noise=0.004,
    fog_density=0.03,
    fog_colour=(0.72, 0.74, 0.76),
    colour_cast=(0.95, 1.0, 1.05),
)
_TARGET_NIGHT = Domain(
    texture_mix=(("stripes", 1.0), ("text", 0.8), ("bricks", 0.5)),
    saturation=0.8,
    ambient=0.12,
    diffuse=0.15,
    headlight=0.8,
    exposure=0.25,
    exposure_jitter=0.15,
    gamma=1.2,
    motion_blur=5.0,
    noise_sigma=0.015,
    shot_noise=0.01,
    colour_cast=(1.25, 0.95, 0.6),
    sky_top=(0.01, 0.01, 0.03),
    sky_bottom=(0.05, 0.04, 0.06),
)

PRESETS: Mapping[str, tuple[str, GeneratorConfig]] = MappingProxyType(
    {
        "default": (
            "small mixed facade+room training set with a short video (demos, tests)",
            GeneratorConfig(views=12, video_frames=16, eval_views=6, texture_density=0.8),
        ),
        "facade": (
            "outdoor street facades, 4 scenes x 40 wide-baseline views",
            GeneratorConfig(layouts=("facade",), num_scenes=4, views=40),
        ),
        "room": (
            "indoor rooms with furniture, 4 scenes x 40 wide-baseline views",
            GeneratorConfig(layouts=("room",), num_scenes=4, views=40),
        ),
        "mixed": (
            "larger training set: 8 scenes (facade, room) x 40 views",
            GeneratorConfig(num_scenes=8, views=40),
        ),
        "target-fog": (
            "target domain: foggy, blurry, noisy, desaturated streets; 200-frame videos "
            "+ held-out eval pairs",
            GeneratorConfig(
                layouts=("facade",),
                num_scenes=1,
                views=0,
                video_frames=200,
                eval_views=16,
                domain=_TARGET_FOG,
            ),
        ),
        "target-night": (
            "target domain: dark, noisy, motion-blurred rooms under a warm headlight; "
            "200-frame videos + held-out eval pairs",
            GeneratorConfig(
                layouts=("room",),
                num_scenes=1,
                views=0,
                video_frames=200,
                eval_views=16,
                domain=_TARGET_NIGHT,
            ),
        ),
    }
)


def _coerce(key: str, value: object, current: object) -> object:
    """Turn CLI/JSON-friendly values (lists, "640x480") into the field's type."""
    if key == "size" and isinstance(value, str):
        try:
            w, h = (int(x) for x in value.lower().split("x"))
        except ValueError:
            raise InputError(f"bad value for 'size': {value!r} (expected WIDTHxHEIGHT)") from None
        return (w, h)
    if key == "overlap_bins" and isinstance(value, list | tuple):
        return tuple(tuple(float(x) for x in b) for b in value)
    if isinstance(value, list):
        return tuple(value)
    if (
        isinstance(current, int | float)
        and not isinstance(current, bool)
        and isinstance(value, str)
    ):
        raise InputError(f"bad value for '{key}': {value!r} (expected a number)")
    return value


def resolve_config(preset: str | GeneratorConfig, **overrides: object) -> GeneratorConfig:
    """Preset (by name) or config, with ``overrides`` applied strictly.

    ``domain`` may be a :class:`Domain` or a dict of domain fields merged into the preset's domain.

    Raises:
        InputError: unknown preset or key (named), or an invalid value.
    """
    if isinstance(preset, GeneratorConfig):
        cfg = preset
    elif preset in PRESETS:
        cfg = PRESETS[preset][1]
    else:
        raise InputError(f"unknown preset '{preset}' (known: {', '.join(PRESETS)})")
    reject_unknown(overrides, (f.name for f in dataclasses.fields(GeneratorConfig)), "generator")
    changes: dict[str, object] = {}
    for key, value in overrides.items():
        if key == "domain" and isinstance(value, Mapping):
            changes[key] = cfg.domain.replace(**value)
        else:
            changes[key] = _coerce(key, value, getattr(cfg, key))
    return dataclasses.replace(cfg, **changes)
