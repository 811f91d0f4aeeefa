"""Tracks from pairwise matches: union-find, conflict split/drop, min_length, confidences, input checks."""

from __future__ import annotations

import numpy as np
import pytest

from imatch_s2ld.ba.tracks import (
    Keypoints,
    PairMatches,
    Tracks,
    as_pair_matches,
    build_tracks,
    connected_components,
    triangle_support,
)
from imatch_s2ld.errors import InputError


def as_sets(tracks: Tracks) -> set[frozenset[tuple[int, int]]]:
    """Each track as a frozen set of (frame, keypoint)."""
    out = set()
    for t in range(tracks.num_tracks):
        s = slice(tracks.track_start[t], tracks.track_start[t + 1])
        out.add(frozenset(zip(tracks.obs_frame[s].tolist(), tracks.obs_kpt[s].tolist())))
    return out


def check_consistent(tracks: Tracks) -> None:
    """Invariants: sorted by (track, frame), one keypoint per frame, keypoint_track agrees."""
    key = tracks.obs_track * tracks.num_frames + tracks.obs_frame
    assert (np.diff(key) > 0).all()
    assert (tracks.lengths >= 2).all()
    nodes = tracks.offsets[tracks.obs_frame] + tracks.obs_kpt
    assert (tracks.keypoint_track[nodes] == tracks.obs_track).all()
    assert (tracks.keypoint_track >= 0).sum() == tracks.num_observations


def test_hand_made_example_known_answer():
    pairs = {
        (0, 1): np.array([[0, 1], [1, 0]]),
        (1, 2): np.array([[1, 2], [0, 0]]),
        (0, 2): np.array([[2, 1]]),
        (2, 3): np.array([[2, 3]]),
    }
    tr = build_tracks([3, 3, 3, 4], pairs)
    check_consistent(tr)
    assert as_sets(tr) == {
        frozenset({(0, 0), (1, 1), (2, 2), (3, 3)}),
        frozenset({(0, 1), (1, 0), (2, 0)}),
        frozenset({(0, 2), (2, 1)}),
    }
    # Numbered by smallest keypoint node: (0, 0) -> track 0, (0, 1) -> 1, (0, 2) -> 2.
    assert tr.track_ids(0).tolist() == [0, 1, 2]
    assert tr.track_ids(3).tolist() == [-1, -1, -1, 0]
    assert tr.lengths.tolist() == [4, 3, 2]
    idx = tr.observation_index()
    assert idx.shape == (3, 4) and idx[2, 1] == -1 and tr.obs_kpt[idx[0, 3]] == 3
    np.testing.assert_allclose(tr.obs_conf, 1.0)
    assert tr.stats["conflicting"] == 0


def test_connected_components_matches_reference():
    rng = np.random.default_rng(0)
    n = 300
    a, b = rng.integers(0, n, 250), rng.integers(0, n, 250)
    root = connected_components(n, a.astype(np.int64), b.astype(np.int64))
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            x = parent[x]
        return x

    for u, v in zip(a.tolist(), b.tolist()):
        ru, rv = find(u), find(v)
        parent[max(ru, rv)] = min(ru, rv)
    ref = np.array([find(x) for x in range(n)])
    np.testing.assert_array_equal(root, ref)  # root = smallest node id of the component


def _two_tracks_and_a_bad_match(conf_bad: float) -> dict:
    """Tracks A = kpt 0 and B = kpt 1 in frames 0-2 (all pairs), C = kpt 2 in frames 0-1, plus a wrong
    match (0, 0) <-> (1, 1) joining A and B (two keypoints of frames 0, 1 and 2 in one component)."""
    return {
        (0, 1): (np.array([[0, 0], [1, 1], [2, 2], [0, 1]]), np.array([0.9, 0.9, 0.8, conf_bad])),
        (1, 2): (np.array([[0, 0], [1, 1]]), np.array([0.7, 0.6])),
        (0, 2): (np.array([[0, 0], [1, 1]]), np.array([0.5, 0.4])),
    }


@pytest.mark.parametrize("conf_bad", [0.1, 1.0])
def test_conflict_split_removes_unsupported_edge(conf_bad: float):
    # The wrong match closes no triangle: it is discarded even when it is the most confident one.
    tr = build_tracks([3, 3, 3], _two_tracks_and_a_bad_match(conf_bad), conflict="split")
    check_consistent(tr)
    assert as_sets(tr) == {
        frozenset({(0, 0), (1, 0), (2, 0)}), frozenset({(0, 1), (1, 1), (2, 1)}), frozenset({(0, 2), (1, 2)}),
    }
    assert tr.stats["conflicting"] == 1 and tr.stats["rejected_edges"] == 1
    # Observation confidence = mean over the kept matches: (0, 0) has 0.9 and 0.5.
    t0 = tr.track_ids(0)[0]
    obs = np.flatnonzero((tr.obs_track == t0) & (tr.obs_frame == 0))
    np.testing.assert_allclose(tr.obs_conf[obs], 0.7)


def test_conflict_drop_removes_component():
    tr = build_tracks([3, 3, 3], _two_tracks_and_a_bad_match(0.1), conflict="drop")
    check_consistent(tr)
    assert as_sets(tr) == {frozenset({(0, 2), (1, 2)})}


def test_conflict_split_by_confidence_on_a_chain():
    # Consecutive-frame matches only (no triangles): keypoint 0 of frame 1 matches keypoints 0 and 1 of
    # frame 2; the more confident match wins and keypoint 1 of frame 2 is left alone (too short).
    pairs = [
        PairMatches.create(0, 1, [[0, 0]], [0.8]),
        PairMatches.create(1, 2, [[0, 0], [0, 1]], [0.3, 0.6]),
    ]
    tr = build_tracks([1, 1, 2], pairs, conflict="split")
    assert as_sets(tr) == {frozenset({(0, 0), (1, 0), (2, 1)})}
    np.testing.assert_allclose(tr.obs_conf, [0.8, 0.7, 0.6])
    assert tr.track_ids(2).tolist() == [-1, 0]


def test_min_length():
    pairs = {(0, 1): np.array([[0, 0], [1, 1]]), (1, 2): np.array([[0, 0]])}
    assert as_sets(build_tracks([2, 2, 1], pairs)) == {
        frozenset({(0, 0), (1, 0), (2, 0)}), frozenset({(0, 1), (1, 1)}),
    }
    tr = build_tracks([2, 2, 1], pairs, min_length=3)
    assert as_sets(tr) == {frozenset({(0, 0), (1, 0), (2, 0)})}
    assert tr.stats["short_tracks"] == 1 and tr.track_ids(1).tolist() == [0, -1]


def test_duplicate_matches_count_once_with_highest_confidence():
    pairs = {(0, 1): (np.array([[0, 0]]), np.array([0.2])), (1, 0): (np.array([[0, 0]]), np.array([0.6]))}
    tr = build_tracks([1, 1], pairs)
    assert tr.stats["edges"] == 1
    np.testing.assert_allclose(tr.obs_conf, [0.6, 0.6])


def test_empty_and_isolated():
    tr = build_tracks([5, 0, 3], {})
    assert tr.num_tracks == 0 and tr.num_observations == 0 and tr.track_start.tolist() == [0]
    assert (tr.keypoint_track == -1).all()


def test_triangle_support():
    # Triangle 0-1-2 and a pendant edge 2-3.
    u, v = np.array([0, 0, 1, 2]), np.array([1, 2, 2, 3])
    assert triangle_support(u, v, 4).tolist() == [1, 1, 1, 0]


def test_input_errors():
    with pytest.raises(InputError, match="outside"):
        build_tracks([2, 2], {(0, 1): np.array([[0, 2]])})
    with pytest.raises(InputError, match="frame index"):
        build_tracks([2, 2], {(0, 3): np.array([[0, 0]])})
    with pytest.raises(InputError, match="itself"):
        build_tracks([2, 2], {(1, 1): np.array([[0, 1]])})
    with pytest.raises(InputError, match=r"\(L, 2\)"):
        build_tracks([2, 2], {(0, 1): np.array([0, 1, 1])})
    with pytest.raises(InputError, match="integer"):
        build_tracks([2, 2], {(0, 1): np.array([[0.0, 1.0]])})
    with pytest.raises(InputError, match="finite"):
        build_tracks([2, 2], {(0, 1): (np.array([[0, 1]]), np.array([np.nan]))})
    with pytest.raises(InputError, match="conflict"):
        build_tracks([2, 2], {}, conflict="merge")
    with pytest.raises(InputError, match="min_length"):
        build_tracks([2, 2], {}, min_length=1)
    with pytest.raises(InputError, match="PairMatches"):
        as_pair_matches([np.zeros((1, 2))])
    with pytest.raises(InputError, match=r"\(K, 2\)"):
        Keypoints.create([np.zeros((3, 3))])
    with pytest.raises(InputError, match=r"\(2,\)"):
        Keypoints.create([np.zeros((2, 2))], [np.ones(3)])


def test_keypoints_container():
    kp = Keypoints.create([np.zeros((3, 2)), np.ones((1, 2))])
    assert kp.num_frames == 2 and kp.counts.tolist() == [3, 1]
    np.testing.assert_allclose(kp.confidence[0], 1.0)


def test_large_window_smoke():
    """10 frames x 2000 keypoints x 45 pairs (75% of points matched per pair, 5% wrong matches)."""
    rng = np.random.default_rng(0)
    N, Kp = 10, 2000
    perm = [rng.permutation(Kp) for _ in range(N)]  # point p is keypoint perm[f][p] in frame f
    pairs = []
    for i in range(N):
        for j in range(i + 1, N):
            p = rng.choice(Kp, 1500, replace=False)
            m = np.stack([perm[i][p], perm[j][p]], 1)
            bad = rng.random(len(m)) < 0.05
            m[bad, 1] = rng.integers(0, Kp, int(bad.sum()))
            pairs.append(PairMatches.create(i, j, m, rng.random(len(m))))
    for conflict in ("split", "drop"):
        tr = build_tracks([Kp] * N, pairs, conflict=conflict)
        check_consistent(tr)
    tr = build_tracks([Kp] * N, pairs, conflict="split")
    point = np.stack([np.argsort(p) for p in perm])[tr.obs_frame, tr.obs_kpt]  # true point per observation
    start = tr.track_start
    pure = np.array([len(set(point[start[t]:start[t + 1]])) == 1 for t in range(tr.num_tracks)])
    assert tr.num_tracks >= 1900 and pure.mean() > 0.98
