"""Match a window of frames with S2LD into per-frame keypoints and pairwise keypoint matches (for tracks).

S2LD detects its sparse keypoints from each image's own backbone features (before attention), so in
eval mode a frame has the same keypoints in every pair it belongs to: a match ``(i, j)`` of a pair
``(a, b)`` links keypoint ``i`` of frame ``a`` to keypoint ``j`` of frame ``b``, and tracks follow from
:func:`imatch_s2ld.ba.build_tracks`. The local dense refinement of a match (its sub-pixel location in
frame ``b``) is what fine-tuning supervises; tracks and BA use the detected keypoint locations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..ba.tracks import Keypoints, PairMatches
from ..models.s2ld import S2LD, ImageEncoding, S2LDOutput

__all__ = ["WindowMatches", "encode_frames", "match_window", "match_window_reference", "pair_matches",
           "window_matches", "window_pairs"]


@dataclass(frozen=True)
class WindowMatches:
    """Keypoints (all detected cells, including padded/invalid ones, which never match) and matches.

    Attributes:
        keypoints: per frame ``(Nk, 2)`` pixels and detection confidence (sigmoid of the logit).
        pairs: one :class:`PairMatches` per matched frame pair (keypoint indices, match confidence).
    """

    keypoints: Keypoints
    pairs: list[PairMatches]


def window_pairs(num_frames: int, max_gap: int | None = None) -> list[tuple[int, int]]:
    """All frame pairs ``(i, j)``, ``i < j``, at most ``max_gap`` frames apart (None: every pair)."""
    gap = num_frames if max_gap is None else max_gap
    return [(i, j) for i in range(num_frames) for j in range(i + 1, min(num_frames, i + gap + 1))]


@torch.no_grad()
def match_window(model: S2LD, images: Tensor, pairs: Sequence[tuple[int, int]],
                 min_confidence: float = 0.0) -> WindowMatches:
    """Run ``model`` (eval mode, no gradient) on each pair of a window.

    Args:
        model: an S2LD network.
        images: ``(N, 3, H, W)`` RGB or ``(N, 1, H, W)`` gray in [0, 1], H and W multiples of 8.
        pairs: frame index pairs ``(a, b)``.
        min_confidence: drop matches below this confidence.
    Returns:
        :class:`WindowMatches`; keypoints come from the first pair each frame appears in (frames in no
        pair get none).
    """
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, 3 or 1, H, W), got {tuple(images.shape)}")
    was_training = model.training
    model.eval()
    frames: dict[int, tuple[Tensor, Tensor]] = {}
    out_pairs = []
    try:
        encodings = encode_frames(model, images, pairs)
        for a, b in pairs:
            out = model.match_encoded(encodings[a], encodings[b])
            frames.setdefault(a, (out.kpts0[0], out.kpts_logits0[0]))
            frames.setdefault(b, (out.kpts1[0], out.kpts_logits1[0]))
            out_pairs.append(pair_matches(out, a, b, min_confidence))
    finally:
        model.train(was_training)
    return window_matches(images.shape[0], frames, out_pairs)


def encode_frames(model: S2LD, images: Tensor, pairs: Sequence[tuple[int, int]]) -> dict[int, ImageEncoding]:
    """Each frame of ``pairs`` encoded once (:meth:`S2LD.encode`; ``model`` in eval mode, where an
    encoding does not depend on the partner): frame index -> encoding."""
    return {i: model.encode(images[i:i + 1]) for i in sorted({f for pair in pairs for f in pair})}


def pair_matches(out: S2LDOutput, a: int, b: int, min_confidence: float = 0.0) -> PairMatches:
    """The predicted (not appended) matches of an S2LD output for frames ``(a, b)`` as keypoint
    indices, without those below ``min_confidence``."""
    keep = (~out.matches_extra) & (out.matches_conf >= min_confidence)
    m = torch.stack([out.matches_i[keep], out.matches_j[keep]], 1).cpu().numpy()
    return PairMatches.create(a, b, m, out.matches_conf[keep].detach().float().cpu().numpy())


def window_matches(num_frames: int, frames: Mapping[int, tuple[Tensor, Tensor]],
                   pairs: list[PairMatches]) -> WindowMatches:
    """:class:`WindowMatches` from each frame's S2LD keypoints ``(K, 2)`` and detection logits ``(K,)``
    (``frames``; frames missing get none) and the pairs' matches."""
    xy = [np.zeros((0, 2), np.float32)] * num_frames
    conf = [np.zeros(0, np.float32)] * num_frames
    for f, (kp, logit) in frames.items():
        xy[f] = kp.detach().float().cpu().numpy()
        conf[f] = torch.sigmoid(logit.detach().float()).cpu().numpy()
    return WindowMatches(Keypoints.create(xy, conf), pairs)


@torch.no_grad()
def match_window_reference(model: S2LD, images: Tensor, min_confidence: float = 0.0) -> WindowMatches:
    """S2LD's *output* matches of a window as tracks: frame 0 is the reference, each of its matched
    keypoints (detected position) is linked to its local-dense prediction in every other frame (pairs
    ``(0, b)``). These are the locations the matcher returns (:func:`match_window` uses the detected
    keypoints of both frames instead), so a BA of these tracks measures the matches' own precision.

    Args:
        model: an S2LD network (run in eval mode, no gradient).
        images: ``(N, 3, H, W)`` RGB or ``(N, 1, H, W)`` gray in [0, 1], H and W multiples of 8, ``N >= 2``.
        min_confidence: drop matches below this confidence.
    Returns:
        :class:`WindowMatches`: frame 0 holds its detected keypoints, frame ``b`` one point per match
        of pair ``(0, b)``.
    """
    if images.dim() != 4 or images.shape[1] not in (1, 3) or images.shape[0] < 2:
        raise ValueError(f"images must be (N >= 2, 3 or 1, H, W), got {tuple(images.shape)}")
    was_training = model.training
    model.eval()
    xy: list[np.ndarray] = []
    conf: list[np.ndarray] = []
    out_pairs = []
    try:
        for b in range(1, images.shape[0]):
            out = model(images[:1], images[b:b + 1])
            if not xy:
                xy.append(out.kpts0[0].float().cpu().numpy())
                conf.append(torch.sigmoid(out.kpts_logits0[0].float()).cpu().numpy())
            keep = (~out.matches_extra) & (out.matches_conf >= min_confidence)
            xy.append(out.mkpts1[keep].float().cpu().numpy())
            conf.append(out.matches_conf[keep].float().cpu().numpy())
            m = np.stack([out.matches_i[keep].cpu().numpy(), np.arange(int(keep.sum()))], 1)
            out_pairs.append(PairMatches.create(0, b, m, out.matches_conf[keep].float().cpu().numpy()))
    finally:
        model.train(was_training)
    return WindowMatches(Keypoints.create(xy, conf), out_pairs)
