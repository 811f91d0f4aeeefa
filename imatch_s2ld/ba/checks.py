"""Degenerate-input guards run by every backend before solving: a reason string, or None when solvable."""

from __future__ import annotations

from typing import Any

import torch

from ..geometry.triangulation import camera_centers
from .problem import BundleProblem

__all__ = ["check_problem"]


def _nonfinite(name: str, t: torch.Tensor, unit: str) -> str | None:
    if not t.shape[0]:
        return None
    n = int((~torch.isfinite(t.reshape(t.shape[0], -1)).all(-1)).sum())
    return f"non-finite values in {name} ({n} of {t.shape[0]} {unit})" if n else None


def check_problem(problem: BundleProblem, conf: dict[str, Any]) -> str | None:
    """Why ``problem`` cannot be solved (non-finite input, too few tracks, points behind the cameras,
    no baseline), or None."""
    for name, t, unit in (("K", problem.K, "frames"), ("poses", problem.poses.tensor(), "frames"),
                          ("points", problem.points, "points"), ("obs_xy", problem.obs_xy, "observations"),
                          ("obs_weight", problem.obs_weight, "observations")):
        msg = _nonfinite(name, t, unit)
        if msg:
            return msg
    used = problem.obs_weight > 0
    M = problem.num_points
    counts = torch.zeros(M, dtype=torch.long, device=problem.device)
    counts.index_add_(0, problem.obs_point[used], torch.ones_like(problem.obs_point[used]))
    tracks = int((counts >= 2).sum())
    if tracks < int(conf["min_points"]):
        return f"too few tracks: {tracks} points observed in >= 2 frames (need {int(conf['min_points'])})"
    free_frames = int((~problem.fixed_frames).sum())
    free_points = int((~problem.fixed_points & (counts > 0)).sum())
    n_res, n_par = 2 * int(used.sum()), 6 * free_frames + 3 * free_points
    if n_res < n_par:
        return f"underdetermined: {n_res} residuals for {n_par} free parameters"
    z = problem.depths()[used]
    behind = float((z <= 0).double().mean()) if z.numel() else 0.0
    if behind > float(conf["max_behind_fraction"]):
        return f"points behind cameras: {100 * behind:.0f}% of observations have depth <= 0"
    frames = torch.unique(problem.obs_frame[used])
    C = camera_centers(problem.pose_matrices()[frames])
    spread = float(torch.cdist(C, C).max()) if len(frames) > 1 else 0.0
    depth = float(z[z > 0].median()) if bool((z > 0).any()) else 0.0
    if depth <= 0 or spread <= float(conf["min_baseline_ratio"]) * depth:
        return (f"no baseline (pure rotation?): camera centres spread {spread:.3g}, "
                f"median depth {depth:.3g}")
    return None
