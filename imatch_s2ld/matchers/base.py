"""The matcher interface and the name -> factory registry."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any, Protocol, runtime_checkable

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

#: A check gets the same arguments and raises :class:`InputError` for what the factory would refuse.
MatcherCheck = Callable[..., None]

_REGISTRY: dict[str, MatcherFactory] = {}
_CHECKS: dict[str, MatcherCheck] = {}


def register_matcher(
    name: str, factory: MatcherFactory, overwrite: bool = False, check: MatcherCheck | None = None
) -> None:
    """Register ``factory(arg: str | None, **conf) -> Matcher`` under ``name`` (no ``":"``).

    ``check(arg, **conf)``, optional, raises what the factory would raise for bad options or missing
    files without building the matcher (see :func:`check_matcher`).
    """
    if ":" in name:
        raise ValueError(f"matcher names cannot contain ':' ({name!r})")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"matcher {name!r} is already registered")
    _REGISTRY[name] = factory
    _CHECKS.pop(name, None)
    if check is not None:
        _CHECKS[name] = check


def available_matchers() -> tuple[str, ...]:
    """Registered matcher names, sorted."""
    return tuple(sorted(_REGISTRY))


def load_matcher(name: str, **conf) -> Matcher:
    """Build a matcher from ``"name"`` or ``"name:ARG"`` (e.g. ``"loftr:weights.ckpt"``).

    Raises:
        InputError: unknown name (lists the known ones) or bad options for that matcher.
    """
    base, arg = _split(name)
    _check_keywords(base, conf)
    return _REGISTRY[base](arg, **conf)


def check_matcher(name: str, **conf) -> None:
    """Fail now on what :func:`load_matcher` would refuse: the registered check of the matcher (names,
    options, weight files, without building networks), or else building it once.

    Raises:
        InputError: as :func:`load_matcher`.
    """
    base, arg = _split(name)
    _check_keywords(base, conf)
    if base in _CHECKS:
        _CHECKS[base](arg, **conf)
    else:
        _REGISTRY[base](arg, **conf)


def _split(name: str) -> tuple[str, str | None]:
    base, _, arg = name.partition(":")
    if base not in _REGISTRY:
        raise InputError(
            f"--matcher: unknown matcher {name!r}; known: {', '.join(available_matchers())}"
        )
    return base, arg or None


def _check_keywords(base: str, conf: dict[str, Any]) -> None:
    """Unknown options of a factory with named keywords only (no ``**conf``): one line listing the known
    ones. Factories taking ``**conf`` check their options themselves."""
    try:
        params = list(inspect.signature(_REGISTRY[base]).parameters.values())[1:]  # after ``arg``
    except (TypeError, ValueError):  # no introspectable signature: the factory checks its options
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return
    known = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = sorted(set(conf) - set(known))
    if unknown:
        raise InputError(f"--matcher-opt: unknown option(s) {', '.join(unknown)} for {base}; "
                         f"known: {', '.join(known) or 'none'}")


def parse_matcher_options(items: Iterable[str] | None) -> dict[str, Any]:
    """``["max_keypoints=1024", "device=cpu"]`` -> ``{"max_keypoints": 1024, "device": "cpu"}``;
    dotted keys nest: ``"keypoints.detection_threshold=0.05"`` -> ``{"keypoints": {"detection_threshold":
    0.05}}`` (S2LD's configuration sections).

    Values are parsed as int, then float, then bool (``true``/``false``, any case), else kept as strings.

    Raises:
        InputError: an item without ``=`` or with an empty key (part), or a key given twice (also
            as a value and as a section).
    """
    conf: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        key = key.strip()
        parts = key.split(".")
        if not sep or not all(parts):
            raise InputError(f"--matcher-opt: expected KEY=VALUE, got {item!r}")
        node = conf
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise InputError(f"--matcher-opt: {key} given twice")
        if parts[-1] in node:
            raise InputError(f"--matcher-opt: {key} given twice")
        node[parts[-1]] = _parse_value(value.strip())
    return conf


def _parse_value(text: str) -> int | float | bool | str:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


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
