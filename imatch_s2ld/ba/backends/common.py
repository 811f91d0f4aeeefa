"""Helpers shared by the reference backends (``ceres``, ``pypose_dense``, ``theseus``): the reported
cost :func:`robust_cost` and COLMAP's two-camera gauge :func:`plan_gauge`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pypose as pp
import torch
from torch import Tensor

from ...errors import InputError
from ..problem import BundleProblem
from ..robust import robust_rho

__all__ = ["Gauge", "plan_gauge", "robust_cost"]

_BASELINE_EPS = 1e-9  # COLMAP's threshold on a baseline coordinate for the scale gauge


def robust_cost(problem: BundleProblem, poses: pp.LieTensor, points: Tensor, conf: dict[str, Any]) -> float:
    """``0.5 * sum_o w_o * rho(|r_o|^2)`` over observations with ``w_o > 0`` at ``(poses, points)``.

    Args:
        poses: ``SE3`` LieTensor ``(N, 7)`` world-to-camera; points: ``(M, 3)``.
    """
    used = problem.obs_weight > 0
    r = problem.residuals(pp.SE3(poses.tensor().detach()), points.detach())[used]
    rho = robust_rho(r.square().sum(-1), conf["robust_kernel"], float(conf["robust_scale_px"]))
    return float(0.5 * (problem.obs_weight[used] * rho).sum())


@dataclass(frozen=True)
class Gauge:
    """How a backend removes the 7 similarity degrees of freedom.

    Attributes:
        observed: ``(N,)`` bool, frames with a weighted observation (the others keep their pose).
        fixed: ``(N,)`` bool, frames held constant: ``problem.fixed_frames``, plus the first observed
            frame when no observed frame is fixed.
        scale_frame: frame with one translation coordinate held constant (scale gauge), or None.
        scale_dim: which coordinate (0, 1, 2) of that frame's world-to-camera translation.
        description: one line for ``BAResult.extra["gauge"]``.
    """

    observed: Tensor
    fixed: Tensor
    scale_frame: int | None
    scale_dim: int | None
    description: str


def plan_gauge(problem: BundleProblem, conf: dict[str, Any]) -> Gauge:
    """COLMAP's ``TWO_CAMS_FROM_WORLD`` gauge, made explicit so every reference backend picks the same one.

    Observed frames (those with a weighted observation) are what counts. When none is fixed, the first
    is held constant. When fewer than two are fixed and ``conf["scale_gauge"]`` is not ``"none"``
    (``"distance"`` and ``"prior"`` both become this hard constraint), one translation coordinate of the
    scale frame is held constant: the frame is ``conf["scale_frame"]`` or the first free observed frame
    whose baseline to the first fixed frame is not zero, the coordinate the largest component of that
    baseline ``(T_fixed T_scale^-1).t`` (as COLMAP chooses it).

    Raises:
        InputError: ``conf["scale_frame"]`` is out of range, fixed, or not observed.
    """
    N = problem.num_frames
    used = problem.obs_weight > 0
    observed = torch.zeros(N, dtype=torch.bool, device=problem.device)
    observed[problem.obs_frame[used]] = True
    fixed = problem.fixed_frames.clone()
    notes = []
    anchors = torch.nonzero(fixed & observed).flatten().tolist()
    if not anchors:
        first = int(torch.nonzero(observed).flatten()[0])
        fixed[first] = True
        anchors = [first]
        notes.append(f"no observed frame fixed: frame {first} held constant")
    if len(anchors) >= 2 or conf["scale_gauge"] == "none":
        why = "two fixed frames" if len(anchors) >= 2 else "scale_gauge 'none': scale left free"
        return Gauge(observed, fixed, None, None, "; ".join([*notes, f"fixed frames {anchors}, {why}"]))
    frame, dim = _scale_frame(problem, conf, anchors[0], fixed, observed)
    if frame is None:
        notes.append("no free frame with a baseline: scale left free")
    else:
        notes.append(f"frame {anchors[0]} fixed, translation[{dim}] of frame {frame} fixed (scale)")
    return Gauge(observed, fixed, frame, dim, "; ".join(notes))


def _scale_frame(problem: BundleProblem, conf: dict[str, Any], anchor: int, fixed: Tensor,
                 observed: Tensor) -> tuple[int | None, int | None]:
    """The scale frame and the translation coordinate to hold (COLMAP's rule), or ``(None, None)``."""
    N = problem.num_frames
    want = conf["scale_frame"]
    if want is not None:
        want = int(want)
        if not 0 <= want < N or bool(fixed[want]) or not bool(observed[want]):
            raise InputError(f"scale_frame {want} must be a free frame with observations (of {N} frames)")
        candidates = [want]
    else:
        candidates = torch.nonzero(~fixed & observed).flatten().tolist()
    T = problem.pose_matrices()
    for frame in candidates:
        baseline = (T[anchor] @ torch.linalg.inv(T[frame]))[:3, 3].abs()
        if float(baseline.max()) > _BASELINE_EPS:
            return frame, int(baseline.argmax())
    return None, None
