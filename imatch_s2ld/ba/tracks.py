"""Feature tracks over a window of frames, built from pairwise matches.

Input is what a matcher produces for a window of ``N`` frames: per frame keypoints ``(K_i, 2)`` in
pixels (:class:`Keypoints`, optional per-keypoint confidence) and, per matched frame pair ``(i, j)``,
an ``(L, 2)`` array of keypoint indices (column 0 in frame ``i``, column 1 in frame ``j``) with an
optional per-match confidence (:class:`PairMatches`).

Keypoint ``k`` of frame ``f`` is graph node ``offsets[f] + k``; matches are undirected edges. Tracks are
the connected components (vectorised union-find: min-label hooking with full path compression).

Conflicts. A component holding two different keypoints of the same frame is *conflicting*:

- ``conflict="drop"`` removes every conflicting component.
- ``conflict="split"`` rebuilds each conflicting component greedily (Kruskal order): its match edges are
  visited from best to worst and an edge joins its two sub-tracks only if they observe disjoint sets of
  frames; an edge that would put two keypoints of one frame in a track is discarded. "Best" is
  lexicographic: first the *triangle support* of the edge (the number of keypoints matched to both of
  its ends: consistent all-pairs matches of a true track support each other, an isolated wrong match
  closes few triangles), then the match confidence, then the node ids (determinism). Every resulting
  sub-track is conflict-free; they are all kept (subject to ``min_length``).

Duplicate matches (the same two keypoints matched twice, e.g. in pairs ``(i, j)`` and ``(j, i)``) count
once, with their highest confidence. The confidence of an observation is the mean confidence of the
match edges that join it to other keypoints of its final track.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import InputError

__all__ = ["CONFLICT_MODES", "Keypoints", "PairMatches", "Tracks", "as_pair_matches", "build_tracks"]

CONFLICT_MODES = ("split", "drop")


def _numpy(x: Any, name: str, dtype: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise InputError(f"{name}: cannot convert to a {np.dtype(dtype).name} array ({err})") from None


def _indices(x: Any, name: str) -> np.ndarray:
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.size and a.dtype.kind not in "iu":
        raise InputError(f"{name} must hold integer keypoint indices, got dtype {a.dtype}")
    return a.astype(np.int64)


@dataclass(frozen=True)
class Keypoints:
    """Keypoints of a window of ``N`` frames.

    Attributes:
        xy: per frame ``(K_i, 2)`` float64 pixels ``(x, y)`` (values are not checked here: the
            initialisation reports non-finite keypoints as a failure reason).
        confidence: per frame ``(K_i,)`` float64 (all 1 when not given).
    """

    xy: tuple[np.ndarray, ...]
    confidence: tuple[np.ndarray, ...]

    @classmethod
    def create(cls, xy: Sequence[Any], confidence: Sequence[Any] | None = None) -> Keypoints:
        """Validate and copy per-frame arrays (numpy or tensors).

        Raises:
            InputError: a frame's keypoints are not ``(K_i, 2)`` or its confidences not ``(K_i,)``.
        """
        pts = tuple(_numpy(x, f"keypoints of frame {f}", np.float64).copy() for f, x in enumerate(xy))
        for f, x in enumerate(pts):
            if x.ndim != 2 or x.shape[1] != 2:
                raise InputError(f"keypoints of frame {f} must be (K, 2), got {x.shape}")
        if confidence is None:
            conf = tuple(np.ones(len(x)) for x in pts)
        else:
            if len(confidence) != len(pts):
                raise InputError(f"confidences for {len(confidence)} frames, keypoints for {len(pts)}")
            conf = tuple(_numpy(c, f"keypoint confidences of frame {f}", np.float64).copy()
                         for f, c in enumerate(confidence))
            for f, (c, x) in enumerate(zip(conf, pts)):
                if c.shape != (len(x),):
                    raise InputError(f"keypoint confidences of frame {f} must be ({len(x)},), got {c.shape}")
        return cls(pts, conf)

    @property
    def num_frames(self) -> int:
        return len(self.xy)

    @property
    def counts(self) -> np.ndarray:
        """``(N,)`` int64 number of keypoints per frame."""
        return np.array([len(x) for x in self.xy], dtype=np.int64)


@dataclass(frozen=True)
class PairMatches:
    """Matches between frames ``i`` and ``j`` of a window.

    Attributes:
        i, j: frame indices (``i != j``).
        matches: ``(L, 2)`` int64: keypoint index in frame ``i``, keypoint index in frame ``j``.
        confidence: ``(L,)`` float64 (all 1 when not given).
    """

    i: int
    j: int
    matches: np.ndarray
    confidence: np.ndarray

    @classmethod
    def create(cls, i: int, j: int, matches: Any, confidence: Any | None = None) -> PairMatches:
        """Validate shapes and copy (indices are range-checked by :func:`build_tracks`).

        Raises:
            InputError: ``i == j``, ``matches`` not ``(L, 2)`` integers, confidences not ``(L,)``,
                non-finite or negative.
        """
        i, j = int(i), int(j)
        if i == j:
            raise InputError(f"pair ({i}, {j}): a frame cannot be matched with itself")
        m = _indices(matches, f"matches of pair ({i}, {j})")
        if m.size == 0:
            m = m.reshape(0, 2)
        if m.ndim != 2 or m.shape[1] != 2:
            raise InputError(f"matches of pair ({i}, {j}) must be (L, 2), got {m.shape}")
        c = np.ones(len(m)) if confidence is None else _numpy(confidence, f"confidence of pair ({i}, {j})",
                                                              np.float64).copy()
        if c.shape != (len(m),):
            raise InputError(f"confidence of pair ({i}, {j}) must be ({len(m)},), got {c.shape}")
        if not np.isfinite(c).all() or (c < 0).any():
            raise InputError(f"confidence of pair ({i}, {j}) must be finite and >= 0")
        return cls(i, j, m.copy(), c)


def as_pair_matches(
    pair_matches: Sequence[PairMatches] | Mapping[tuple[int, int], Any],
) -> list[PairMatches]:
    """Normalise a list of :class:`PairMatches` or a dict ``{(i, j): matches or (matches, conf)}``."""
    if not isinstance(pair_matches, Mapping):
        out = list(pair_matches)
        for p in out:
            if not isinstance(p, PairMatches):
                raise InputError(f"pair matches must be PairMatches objects, got {type(p).__name__}")
        return out
    out = []
    for key, value in pair_matches.items():
        if not (isinstance(key, tuple) and len(key) == 2):
            raise InputError(f"pair-match keys must be (i, j) frame pairs, got {key!r}")
        m, c = value if isinstance(value, tuple) else (value, None)
        out.append(PairMatches.create(key[0], key[1], m, c))
    return out


@dataclass(frozen=True)
class Tracks:
    """Tracks of a window (``N`` frames, ``T`` tracks, ``O`` observations).

    Observations are sorted by track, then frame; a track has at most one keypoint per frame.

    Attributes:
        num_keypoints: ``(N,)`` keypoints per frame; offsets: ``(N + 1,)`` node offset of each frame.
        keypoint_track: ``(sum K_i,)`` track id of each keypoint (node), -1 when in no track.
        obs_track, obs_frame, obs_kpt: ``(O,)`` int64 track, frame and keypoint index of each observation.
        obs_conf: ``(O,)`` float64 mean confidence of the observation's matches inside its track.
        track_start: ``(T + 1,)`` the observations of track ``t`` are ``track_start[t]:track_start[t + 1]``.
        stats: counts (edges, components, conflicting components, discarded edges, short tracks...).
    """

    num_keypoints: np.ndarray
    offsets: np.ndarray
    keypoint_track: np.ndarray
    obs_track: np.ndarray
    obs_frame: np.ndarray
    obs_kpt: np.ndarray
    obs_conf: np.ndarray
    track_start: np.ndarray
    stats: dict[str, int] = field(default_factory=dict, compare=False)

    @property
    def num_frames(self) -> int:
        return len(self.num_keypoints)

    @property
    def num_tracks(self) -> int:
        return len(self.track_start) - 1

    @property
    def num_observations(self) -> int:
        return len(self.obs_track)

    @property
    def lengths(self) -> np.ndarray:
        """``(T,)`` number of frames observing each track."""
        return np.diff(self.track_start)

    def track_ids(self, frame: int) -> np.ndarray:
        """``(K_frame,)`` track id of each keypoint of ``frame`` (-1: in no track)."""
        return self.keypoint_track[self.offsets[frame]:self.offsets[frame + 1]]

    def observation_index(self) -> np.ndarray:
        """``(T, N)`` int64 observation index of track ``t`` in frame ``f``, -1 where not observed."""
        idx = np.full((self.num_tracks, self.num_frames), -1, dtype=np.int64)
        idx[self.obs_track, self.obs_frame] = np.arange(self.num_observations)
        return idx


# ---------------------------------------------------------------------------------------- union-find
def connected_components(num_nodes: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Vectorised union-find: ``(num_nodes,)`` root of each node = smallest node id of its component.

    Each round hooks every root to the smallest root it is linked to (``np.minimum.at``: roots only
    point to smaller ids, so no cycles), then compresses all paths by pointer jumping; edges found
    inside one component are dropped from later rounds.

    Args:
        a, b: ``(E,)`` int64 edge end points.
    """
    parent = np.arange(num_nodes, dtype=np.int64)
    while len(a):
        ra, rb = parent[a], parent[b]
        cross = ra != rb
        if not cross.any():
            break
        a, b, ra, rb = a[cross], b[cross], ra[cross], rb[cross]
        np.minimum.at(parent, np.maximum(ra, rb), np.minimum(ra, rb))
        while True:
            nxt = parent[parent]
            if np.array_equal(nxt, parent):
                break
            parent = nxt
    return parent


def _edges(pairs: list[PairMatches], counts: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, ...]:
    """Validated, de-duplicated undirected edges ``(lo, hi, conf)`` with ``lo < hi`` (node ids)."""
    N = len(counts)
    lo, hi, cf = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0)]
    for p in pairs:
        if not (0 <= p.i < N and 0 <= p.j < N):
            raise InputError(f"pair ({p.i}, {p.j}): frame index outside [0, {N})")
        for col, f in ((0, p.i), (1, p.j)):
            k = p.matches[:, col]
            if len(k) and (k.min() < 0 or k.max() >= counts[f]):
                raise InputError(f"pair ({p.i}, {p.j}): keypoint index outside [0, {counts[f]}) of frame {f}")
        u, v = offsets[p.i] + p.matches[:, 0], offsets[p.j] + p.matches[:, 1]
        lo.append(np.minimum(u, v))
        hi.append(np.maximum(u, v))
        cf.append(p.confidence)
    u, v, c = np.concatenate(lo), np.concatenate(hi), np.concatenate(cf)
    order = np.lexsort((-c, v, u))  # per (u, v): highest confidence first
    u, v, c = u[order], v[order], c[order]
    first = np.ones(len(u), dtype=bool)
    first[1:] = (u[1:] != u[:-1]) | (v[1:] != v[:-1])
    return u[first], v[first], c[first]


def _conflicting_roots(root: np.ndarray, frame: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """Roots of components (over ``nodes``) holding two keypoints of one frame."""
    r, f = root[nodes], frame[nodes]
    order = np.lexsort((f, r))
    r, f = r[order], f[order]
    dup = (r[1:] == r[:-1]) & (f[1:] == f[:-1])
    return np.unique(r[1:][dup])


def triangle_support(u: np.ndarray, v: np.ndarray, num_nodes: int) -> np.ndarray:
    """``(E,)`` number of nodes adjacent to both ends of each undirected edge ``(u, v)`` (unique edges)."""
    src, dst = np.concatenate([u, v]), np.concatenate([v, u])
    order = np.argsort(src, kind="stable")
    src, dst = src[order], dst[order]
    deg = np.bincount(src, minlength=num_nodes)
    start = np.concatenate([[0], np.cumsum(deg)])
    edge = np.repeat(np.arange(len(u)), deg[u])  # one row per (edge, neighbour of u)
    within = np.arange(len(edge)) - np.repeat(np.cumsum(deg[u]) - deg[u], deg[u])
    w = dst[start[u][edge] + within]
    keys = np.sort(src * num_nodes + dst)
    q = v[edge] * num_nodes + w
    pos = np.clip(np.searchsorted(keys, q), 0, max(len(keys) - 1, 0))
    hit = (keys[pos] == q) if len(keys) else np.zeros(len(q), dtype=bool)
    return np.bincount(edge[hit], minlength=len(u))


def _greedy_split(u: np.ndarray, v: np.ndarray, c: np.ndarray, frame: np.ndarray, num_nodes: int) -> tuple:
    """Kruskal rebuild of conflicting components (see the module docstring).

    Returns:
        root: ``(num_nodes,)`` new root per node (only meaningful for the nodes of ``u``, ``v``);
        rejected: number of discarded edges.
    """
    support = triangle_support(u, v, num_nodes)
    order = np.lexsort((v, u, -c, -support))
    nodes, inv = np.unique(np.concatenate([u, v]), return_inverse=True)
    lu, lv = inv[:len(u)][order].tolist(), inv[len(u):][order].tolist()
    parent = list(range(len(nodes)))
    frames = [1 << int(f) for f in frame[nodes]]
    size = [1] * len(nodes)

    def find(x: int) -> int:
        r = x
        while parent[r] != r:
            r = parent[r]
        while parent[x] != r:
            parent[x], x = r, parent[x]
        return r

    rejected = 0
    for a, b in zip(lu, lv):
        ra, rb = find(a), find(b)
        if ra == rb:
            continue
        if frames[ra] & frames[rb]:
            rejected += 1
            continue
        if size[ra] < size[rb]:
            ra, rb = rb, ra
        parent[rb] = ra
        size[ra] += size[rb]
        frames[ra] |= frames[rb]
    root = np.arange(num_nodes, dtype=np.int64)
    root[nodes] = nodes[[find(x) for x in range(len(nodes))]]
    return root, rejected


def build_tracks(
    num_keypoints_per_frame: Sequence[int] | np.ndarray,
    pair_matches: Sequence[PairMatches] | Mapping[tuple[int, int], Any],
    min_length: int = 2,
    conflict: str = "split",
) -> Tracks:
    """Tracks (connected components of the match graph) over a window; see the module docstring.

    Args:
        num_keypoints_per_frame: ``(N,)`` keypoints per frame (e.g. ``Keypoints.counts``).
        pair_matches: list of :class:`PairMatches`, or ``{(i, j): (L, 2) matches}`` /
            ``{(i, j): ((L, 2) matches, (L,) confidence)}``.
        min_length: tracks observed in fewer frames are dropped (>= 2).
        conflict: ``"split"`` or ``"drop"`` (conflicting components).
    Returns:
        :class:`Tracks`, numbered by their smallest node id.
    Raises:
        InputError: bad shapes, frame or keypoint index out of range, bad option.
    """
    if conflict not in CONFLICT_MODES:
        raise InputError(f"unknown conflict mode {conflict!r}; choose one of {CONFLICT_MODES}")
    if int(min_length) < 2:
        raise InputError(f"min_length must be >= 2, got {min_length}")
    counts = _indices(num_keypoints_per_frame, "num_keypoints_per_frame").reshape(-1)
    if (counts < 0).any():
        raise InputError("num_keypoints_per_frame must be non-negative")
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    n = int(offsets[-1])
    frame = np.repeat(np.arange(len(counts)), counts)
    u, v, c = _edges(as_pair_matches(pair_matches), counts, offsets)
    root = connected_components(n, u, v)
    linked = np.unique(np.concatenate([u, v]))
    bad = _conflicting_roots(root, frame, linked)
    stats = {"edges": len(u), "components": len(np.unique(root[linked])), "conflicting": len(bad),
             "rejected_edges": 0}
    if len(bad):
        in_bad = np.isin(root[u], bad)
        if conflict == "drop":
            root[np.isin(root, bad)] = -1
            stats["rejected_edges"] = int(in_bad.sum())
        else:
            new_root, stats["rejected_edges"] = _greedy_split(u[in_bad], v[in_bad], c[in_bad], frame, n)
            sel = np.isin(root, bad)
            root[sel] = new_root[sel]
    return _assemble(root, frame, linked, u, v, c, counts, offsets, int(min_length), stats)


def _assemble(root: np.ndarray, frame: np.ndarray, linked: np.ndarray, u: np.ndarray, v: np.ndarray,
              c: np.ndarray, counts: np.ndarray, offsets: np.ndarray, min_length: int,
              stats: dict[str, int]) -> Tracks:
    """Number the conflict-free components of at least ``min_length`` nodes and flatten them."""
    nodes = linked[root[linked] >= 0]  # ascending
    _, inv, size = np.unique(root[nodes], return_inverse=True, return_counts=True)
    _, first = np.unique(inv, return_index=True)  # position of each component's smallest node
    keep = size >= min_length
    stats["short_tracks"] = int((~keep).sum())
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))  # components by smallest node
    kept_before = np.cumsum(keep[np.argsort(first, kind="stable")]) - 1
    tid = kept_before[rank]
    node_track = np.full(len(root), -1, dtype=np.int64)
    node_track[nodes] = np.where(keep[inv], tid[inv], -1)
    # Observation confidence: mean over the node's edges that stay inside its track.
    inside = (node_track[u] >= 0) & (node_track[u] == node_track[v])
    ends = np.concatenate([u[inside], v[inside]])
    csum = np.bincount(ends, weights=np.concatenate([c[inside], c[inside]]), minlength=len(root))
    cnt = np.bincount(ends, minlength=len(root))
    obs_nodes = np.flatnonzero(node_track >= 0)
    obs_nodes = obs_nodes[np.lexsort((frame[obs_nodes], node_track[obs_nodes]))]
    obs_track = node_track[obs_nodes]
    T = int(keep.sum())
    stats["tracks"] = T
    return Tracks(
        num_keypoints=counts.copy(), offsets=offsets, keypoint_track=node_track, obs_track=obs_track,
        obs_frame=frame[obs_nodes].astype(np.int64), obs_kpt=obs_nodes - offsets[frame[obs_nodes]],
        obs_conf=csum[obs_nodes] / np.maximum(cnt[obs_nodes], 1),
        track_start=np.searchsorted(obs_track, np.arange(T + 1)).astype(np.int64), stats=stats,
    )
