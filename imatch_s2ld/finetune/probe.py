"""Probe windows: BA of fixed windows with the current matcher (:func:`probe_ba`), the preflight that
refuses an unusable video before anything is written (:func:`preflight`), and the profile search of a
prior focal length (:func:`refine_focal`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ..ba.pipeline import reconstruct_window
from ..errors import InputError
from .data import VideoWindows, evenly_spaced
from .intrinsics import Intrinsics
from .model import FinetuneModel, reason_counts, window_statistics
from .results import Preflight, ProbeBA
from .window import window_pairs

__all__ = ["preflight", "probe_ba", "refine_focal", "source_failures"]

logger = logging.getLogger(__name__)


def _window_geometry(
    model: FinetuneModel, windows: VideoWindows, index: int, own_tracks: bool = False,
    predictions: bool = False,
) -> tuple[Any, torch.Tensor]:
    item = windows[index]
    images = item["images"]
    from .window import match_window, match_window_reference

    if predictions:
        return match_window_reference(model.net, images, float(model.conf["min_confidence"])), item["K"]
    pairs = window_pairs(images.shape[0], model.conf["max_gap"])
    s2ld = match_window(model.net, images, pairs, float(model.conf["min_confidence"]))
    return (s2ld if own_tracks else model.geometry_matches(images, pairs, s2ld)), item["K"]


def probe_ba(
    model: FinetuneModel,
    windows: VideoWindows,
    indices: list[int],
    K: np.ndarray | None = None,
    own_tracks: bool = True,
    predictions: bool = False,
) -> ProbeBA:
    """Reconstruct the windows ``indices`` with ``model``'s current matcher (no training): from S2LD's own
    tracks (``own_tracks``: the BA error measures the matcher, whatever ``--geometry-from`` is) or from
    the configured geometry source (the preflight). S2LD's own tracks link its detected keypoints
    (:func:`.window.match_window`: the detector's repeatability), or with ``predictions`` the
    reference frame's keypoints to their local-dense predictions in the other frames
    (:func:`.window.match_window_reference`: the precision of the matches S2LD outputs).

    Returns:
        one row per window and the means over the reconstructed ones.
    """
    rows = []
    for index in indices:
        geometry, K_item = _window_geometry(model, windows, index, own_tracks, predictions)
        Kw = torch.as_tensor(K if K is not None else K_item.numpy(), dtype=torch.float64)
        rec = reconstruct_window(geometry.keypoints, geometry.pairs, Kw, model.conf["reconstruction"])
        stats = window_statistics(rec)
        rows.append(
            {
                "window": index,
                "success": bool(rec.success),
                "reason": rec.reason,
                **stats,
                "median_flow_px": _median_flow(geometry),
                "observations": _observation_residuals(rec, geometry, predictions),
            }
        )
    ok = [r for r in rows if r["success"]]

    def mean(key: str) -> float | None:
        return float(np.mean([r[key] for r in ok])) if ok else None

    return ProbeBA(rows, len(ok), mean("ba_rms_px"), mean("ba_rms_init_px"), mean("num_points"),
                   mean("inlier_ratio"))


def _observation_residuals(rec: Any, geometry: Any, predictions: bool) -> list[list[float]]:
    """Each inlier observation of a successful reconstruction as ``[frame, anchor, x, y, residual_px]``:
    the anchor is the observed keypoint itself, or with ``predictions`` the reference-frame keypoint
    it was predicted from, at pixel ``(x, y)``; the same anchor in two matchers' probes is the same
    observation (:func:`.report.probe_common` compares those). Empty for a failed window."""
    if not rec.success or rec.ba is None:
        return []
    frame_kpt = np.asarray(rec.init.obs_keypoint)
    inlier = rec.ba.inliers.cpu().numpy()
    resid = rec.ba.residuals.detach().double().norm(dim=-1).cpu().numpy()
    ref = {p.j: p.matches[:, 0] for p in geometry.pairs} if predictions else {}
    xy = geometry.keypoints.xy
    rows = []
    for (f, k), r in zip(frame_kpt[inlier], resid[inlier]):
        f, k = int(f), int(k)
        frame, anchor = (0, int(ref[f][k])) if predictions and f != 0 else (f, k)
        x, y = xy[frame][anchor]
        rows.append([f, anchor, round(float(x), 3), round(float(y), 3), round(float(r), 5)])
    return rows


def _median_flow(geometry: Any) -> float:
    """Median displacement (pixels) of the matches of the window's most distant pair."""
    if not geometry.pairs:
        return float("nan")
    pm = max(geometry.pairs, key=lambda p: (p.j - p.i, len(p.matches)))
    if len(pm.matches) == 0:
        return float("nan")
    xy = geometry.keypoints.xy
    d = xy[pm.j][pm.matches[:, 1]] - xy[pm.i][pm.matches[:, 0]]
    return float(np.median(np.linalg.norm(d, axis=1)))


def preflight(
    model: FinetuneModel, windows: VideoWindows, intr: Intrinsics, conf: Mapping[str, Any]
) -> Preflight:
    """Refuse a static camera or an unreconstructable video; refine a prior focal length if asked
    (``refine_focal``: :func:`refine_focal` on the probe windows).

    Raises:
        InputError: static camera, or no probe window could be reconstructed (with the reasons).
    """
    pconf = conf["preflight"]
    indices = evenly_spaced(len(windows), int(pconf["windows"]))
    K = np.asarray(intr.K, dtype=np.float64)
    probe = probe_ba(model, windows, indices, K, own_tracks=False)
    flows = [r["median_flow_px"] for r in probe.windows if np.isfinite(r["median_flow_px"])]
    where = windows.video.path
    if flows and max(flows) < float(pconf["static_px"]):
        raise InputError(
            f"{where}: the camera does not move (median match displacement "
            f"{max(flows):.2f} px over a window); fine-tuning needs parallax: use a moving "
            "camera or a larger --window-spacing / --stride"
        )
    if probe.success == 0:
        reasons = source_failures(model, windows, indices, K, probe)
        raise InputError(
            f"{where}: none of {len(indices)} probe windows could be reconstructed with "
            f"--geometry-from {model.source.name} ({reasons}); "
            "try another --geometry-from, --intrinsics, or a larger --window-spacing"
        )
    search = None
    if intr.source == "prior" and conf["refine_focal"]:
        K, search = refine_focal(model, windows, indices, K)
    return Preflight(K, probe, search)


def source_failures(model: FinetuneModel, windows: VideoWindows, indices: list[int], K: np.ndarray,
                    probe: ProbeBA) -> str:
    """Why no probe window reconstructs, per source: ``"sift: 3x too few tracks, 1x ..."``; for a
    union each of its sources is tried alone on the windows (``matcher: ...; sift: ...``)."""

    def counts(reasons: list[str]) -> str:
        return ", ".join(f"{n}x {k}" for k, n in reason_counts(reasons).items())

    parts = model.source.parts
    if len(parts) == 1:
        return f"{parts[0]}: {counts([r['reason'] for r in probe.windows])}"
    per_part = {part: [] for part in parts}
    Kw = torch.as_tensor(K, dtype=torch.float64)
    for index in indices:
        images = windows[index]["images"]
        pairs = window_pairs(images.shape[0], model.conf["max_gap"])
        for part in parts:
            m = model.part_matches(part, images, pairs)
            rec = reconstruct_window(m.keypoints, m.pairs, Kw, model.conf["reconstruction"])
            per_part[part].append("reconstructs alone" if rec.success else rec.reason)
    return "; ".join(f"{part}: {counts(reasons)}" for part, reasons in per_part.items())


_GOLDEN = 0.381966  # 1 - 1/phi: golden-section step, as a fraction of the larger side of the bracket


def _scaled_focal(K: np.ndarray, factor: float) -> np.ndarray:
    """``K`` with fx and fy multiplied by ``factor``."""
    Kf = np.array(K, dtype=np.float64)
    Kf[0, 0] *= factor
    Kf[1, 1] *= factor
    return Kf


def _parabola_vertex(a: float, x: float, b: float, fa: float, fx: float, fb: float) -> float | None:
    """Abscissa of the minimum of the parabola through three points ``a < x < b`` (None if degenerate)."""
    if not (a < x < b and np.isfinite([fa, fx, fb]).all()):
        return None
    p, q = (x - a) * (fx - fb), (x - b) * (fx - fa)
    den = p - q
    if den >= 0:  # not convex (the middle point is not below the chord)
        return None
    return x - 0.5 * ((x - a) * p - (x - b) * q) / den


def refine_focal(
    model: FinetuneModel,
    windows: VideoWindows,
    indices: list[int],
    K: np.ndarray,
    factors: tuple[float, ...] = (0.6, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5, 1.8),
    fine_steps: int = 4,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Profile search of the focal length (fx, fy = factor x the prior's) by the BA of the probe windows.

    The cost of a factor is the mean over the probe windows of the final robust BA cost per observation.
    The windows are matched once (their geometry does not depend on K); an evaluation is one BA per
    window. Windows that count: those that reconstruct at every coarse factor, or if none does, those that
    reconstruct with the prior (a factor at which one of them fails is then out).

    1. Coarse: every factor of ``factors``.
    2. Fine: golden-section search of log(factor) between the coarse neighbours of the best coarse factor
       (``fine_steps`` evaluations, each shrinking the bracket to ~0.6-0.8 of its width), then one
       evaluation at the vertex of the parabola through the best point and the two bracket ends. The
       lowest cost of all evaluations wins: a few percent of the profile optimum instead of up to
       +-11% for the coarse grid alone, for 5 more BAs per window (13 instead of 8).

    Returns:
        K with the chosen focal (``K`` unchanged if no window reconstructs) and the search
        ``{"prior_fx", "factor" (None: not refined), "fx", "windows", "evaluations": [{"stage": "coarse" |
        "fine", "factor", "fx", "cost"}, ...]}`` (cost None: a counted window failed at that factor).
    """
    geometries = {index: _window_geometry(model, windows, index)[0] for index in indices}  # K-independent
    prior_fx = float(K[0, 0])

    def window_costs(factor: float) -> dict[int, float]:
        costs = {}
        for index, geometry in geometries.items():
            Kf = torch.as_tensor(_scaled_focal(K, factor))
            rec = reconstruct_window(geometry.keypoints, geometry.pairs, Kf, model.conf["reconstruction"])
            if rec.success and rec.ba is not None and rec.init.problem is not None:
                costs[index] = rec.ba.cost_history[-1] / max(1, rec.init.problem.num_observations)
        return costs

    coarse = {f: window_costs(f) for f in factors}
    used = set(indices).intersection(*coarse.values())
    if not used:
        used = set(coarse[1.0] if 1.0 in coarse else window_costs(1.0))
    table: dict[float, float] = {}  # log(factor) -> cost
    evaluations: list[dict[str, Any]] = []

    def record(stage: str, t: float, costs: dict[int, float]) -> float:
        cost = float(np.mean([costs[i] for i in used])) if used and used <= costs.keys() else float("inf")
        table[t] = cost
        f = float(np.exp(t))
        evaluations.append(
            {
                "stage": stage,
                "factor": round(f, 4),
                "fx": round(prior_fx * f, 2),
                "cost": cost if np.isfinite(cost) else None,
            }
        )
        return cost

    for f in factors:
        record("coarse", float(np.log(f)), coarse[f])
    search: dict[str, Any] = {
        "prior_fx": prior_fx,
        "factor": None,
        "fx": prior_fx,
        "windows": sorted(used),
        "evaluations": evaluations,
    }
    if not np.isfinite(min(table.values())):
        logger.warning("focal refinement: no probe window reconstructs; keeping the prior focal")
        return K, search

    def cost(t: float) -> float:
        return record("fine", t, window_costs(float(np.exp(t))))

    grid = sorted(table)
    x = min(grid, key=table.__getitem__)
    k = grid.index(x)
    coarse_best = float(np.exp(x))
    a, b = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
    for _ in range(int(fine_steps)):
        u = x + _GOLDEN * (b - x) if b - x >= x - a else x - _GOLDEN * (x - a)
        if abs(u - x) < 1e-3:  # bracket narrower than 0.1 %
            break
        if cost(u) < table[x]:
            a, b, x = (x, b, u) if u > x else (a, x, u)
        else:
            a, b = (a, u) if u > x else (u, b)
    v = _parabola_vertex(a, x, b, table[a], table[x], table[b])
    if v is not None and min(abs(v - t) for t in table) > 1e-3:
        cost(v)
    best = min(table, key=table.__getitem__)
    factor = float(np.exp(best))
    Kb = _scaled_focal(K, factor)
    search.update(factor=round(factor, 4), fx=round(float(Kb[0, 0]), 2))
    logger.info(
        "focal refinement: factor %.3f of the prior (fx = %.1f px; best coarse factor %.2f; %d evaluations)",
        factor,
        Kb[0, 0],
        coarse_best,
        len(evaluations),
    )
    return Kb, search
