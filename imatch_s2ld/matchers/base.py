"""The matcher interface and the name -> factory registry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np

from ..errors import InputError

MatchOutput = tuple[np.ndarray, np.ndarray, np.ndarray]


@runtime_checkable
class Matcher(Protocol):
    """Anything that matches two images.

    ``match(image0, image1)`` takes uint8 images, (H, W) grayscale or (H, W, 3) RGB, and returns
    ``kpts0`` (N, 2) float32, ``kpts1`` (N, 2) float32 (pixels of the input images, OpenCV pixel
    centres) and ``confidence`` (N,) float32 (higher is better).

    Optional attribute ``grayscale: bool``: when true the matcher only uses intensities, and
    evaluators may decode images straight to grayscale (``cv2.IMREAD_GRAYSCALE``, as the
    reference SIFT protocol does) instead of passing RGB. See :func:`wants_grayscale`.
    """

    name: str

    def match(self, image0: np.ndarray, image1: np.ndarray) -> MatchOutput: ...


#: A factory gets the part of the name after ``":"`` (or ``None``) and keyword options.
MatcherFactory = Callable[..., Matcher]

_REGISTRY: dict[str, MatcherFactory] = {}


def register_matcher(name: str, factory: MatcherFactory, overwrite: bool = False) -> None:
    """Register ``factory(arg: str | None, **conf) -> Matcher`` under ``name`` (no ``":"``)."""
    if ":" in name:
        raise ValueError(f"matcher names cannot contain ':' ({name!r})")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"matcher {name!r} is already registered")
    _REGISTRY[name] = factory


def available_matchers() -> tuple[str, ...]:
    """Registered matcher names, sorted."""
    return tuple(sorted(_REGISTRY))


def load_matcher(name: str, **conf) -> Matcher:
    """Build a matcher from ``"name"`` or ``"name:ARG"`` (e.g. ``"loftr:weights.ckpt"``).

    Raises:
        InputError: unknown name (lists the known ones) or bad options for that matcher.
    """
    base, _, arg = name.partition(":")
    if base not in _REGISTRY:
        raise InputError(
            f"--matcher: unknown matcher {name!r}; known: {', '.join(available_matchers())}"
        )
    return _REGISTRY[base](arg or None, **conf)


def wants_grayscale(matcher: Matcher) -> bool:
    """Whether ``matcher`` declares ``grayscale = True`` (default False: it gets RGB images)."""
    return bool(getattr(matcher, "grayscale", False))


def as_float32_matches(kpts0, kpts1, confidence) -> MatchOutput:
    """Cast to the contract: (N, 2), (N, 2), (N,) float32 (also for N = 0)."""
    k0 = np.asarray(kpts0, dtype=np.float32).reshape(-1, 2)
    k1 = np.asarray(kpts1, dtype=np.float32).reshape(-1, 2)
    c = np.asarray(confidence, dtype=np.float32).reshape(-1)
    if not len(k0) == len(k1) == len(c):
        raise ValueError(f"inconsistent match arrays: {len(k0)}, {len(k1)}, {len(c)}")
    return k0, k1, c
