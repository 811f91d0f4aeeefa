"""Differentiable multi-view triangulation (weighted DLT), triangulation angles, reprojection residuals.

Conventions (see :mod:`imatch_s2ld.conventions`): pixels ``(x, y)`` with integer = pixel centre, poses
world-to-camera ``T_cw`` (4x4), ``T_0to1`` maps camera-0 to camera-1 coordinates, depth = camera z.

Numerics: :func:`triangulate_dlt` always solves in float64 (the 4x4 eigenproblem per point is cheap) and
returns float32 for half / bfloat16 inputs, the input dtype otherwise. The smallest eigenvector has a
custom backward that only uses the gaps between the smallest eigenvalue and the others, so gradients are
finite whenever that eigenvalue is separated, and zero (not NaN) for degenerate points.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .camera import project, transform_points, unproject

__all__ = [
    "camera_centers",
    "reprojection_residuals",
    "triangulate_dlt",
    "triangulate_pair",
    "triangulate_tracks",
    "triangulation_angle",
]


def _out_dtype(x: Tensor) -> torch.dtype:
    return x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32


def _check_shape(x: Tensor, tail: tuple[int, ...], name: str, shape_doc: str) -> None:
    if x.dim() < len(tail) or tuple(x.shape[-len(tail):]) != tail:
        raise ValueError(f"{name} must be {shape_doc}, got shape {tuple(x.shape)}")


def camera_centers(T_cw: Tensor) -> Tensor:
    """Camera centres in the world frame ``C = -R^T t``: ``(..., 4, 4) -> (..., 3)``."""
    _check_shape(T_cw, (4, 4), "T_cw", "(..., 4, 4)")
    R, t = T_cw[..., :3, :3], T_cw[..., :3, 3:]
    return -(R.transpose(-1, -2) @ t)[..., 0]


class _SmallestEigenvector(torch.autograd.Function):
    """Unit eigenvector of the smallest eigenvalue of symmetric ``(..., 4, 4)`` matrices.

    Backward uses ``dv0 = -(M - l0 I)^+ dM v0``, i.e. only the gaps ``l_j - l0`` (j > 0); where the
    relative gap ``(l1 - l0) / l_max`` is at most ``gap_eps`` the gradient is set to 0.
    """

    @staticmethod
    def forward(ctx, M: Tensor, gap_eps: float) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        L, V = torch.linalg.eigh(M)
        ctx.save_for_backward(L, V)
        ctx.gap_eps = gap_eps
        ctx.mark_non_differentiable(L)
        return V[..., :, 0].clone(), L

    @staticmethod
    def backward(ctx, g: Tensor, _gL: Tensor | None) -> tuple[Tensor, None]:  # type: ignore[override]
        L, V = ctx.saved_tensors
        v0, Vr = V[..., :, 0], V[..., :, 1:]
        gap = L[..., 1:] - L[..., :1]  # (..., 3), non-negative
        ref = L[..., -1:].abs().clamp_min(torch.finfo(L.dtype).tiny)
        ok = (L[..., 1:2] - L[..., :1]) > ctx.gap_eps * ref  # (..., 1)
        coef = (Vr * g[..., :, None]).sum(-2) / torch.where(ok, gap, torch.ones_like(gap))
        coef = torch.where(ok, coef, torch.zeros_like(coef))
        u = -(Vr * coef[..., None, :]).sum(-1)  # (..., 4)
        gM = u[..., :, None] * v0[..., None, :]
        return 0.5 * (gM + gM.transpose(-1, -2)), None


def triangulate_dlt(
    kpts: Tensor,
    K: Tensor,
    T_cw: Tensor,
    weights: Tensor | None = None,
    gap_eps: float = 1e-10,
    w_eps: float = 1e-9,
) -> tuple[Tensor, Tensor]:
    """Confidence-weighted linear (DLT) triangulation from ``V >= 2`` views, batched and differentiable.

    For each point the ``2V`` rows ``x_n P_3 - P_1`` and ``y_n P_3 - P_2`` are built from normalized
    coordinates ``K^-1 (x, y, 1)`` and ``P = T_cw[:3]``, in a world frame centred on the mean camera
    centre and scaled by the RMS centre spread (conditioning; makes the result invariant to the scale
    of the poses). Rows of view ``v`` are multiplied by ``weights[v]`` (0 = view not used). The point
    is the eigenvector of the smallest eigenvalue of ``A^T A`` (4x4, float64).

    A point is valid when at least two views have a positive weight, the smallest eigenvalue is
    separated (``(l1 - l0) > gap_eps * l_max``: not parallel coincident rays, not all weights 0), the
    homogeneous coordinate is not ~0 (``|w| > w_eps`` in the normalized frame: not at infinity) and
    its depth is positive in every view with a positive weight (cheirality).

    Args:
        kpts: ``(..., V, N, 2)`` pixels ``(x, y)``.
        K: ``(..., V, 3, 3)`` intrinsics.
        T_cw: ``(..., V, 4, 4)`` world-to-camera poses.
        weights: ``(..., V, N)`` non-negative per-view weights, or None (all 1).
        gap_eps: relative eigen-gap below which a point is degenerate.
        w_eps: threshold on the homogeneous coordinate (unit 4-vector, normalized frame).
    Returns:
        points: ``(..., N, 3)`` world points (0 where the system is degenerate, finite everywhere).
        valid: ``(..., N)`` bool.
    """
    _check_shape(kpts, (2,), "kpts", "(..., V, N, 2)")
    _check_shape(K, (3, 3), "K", "(..., V, 3, 3)")
    _check_shape(T_cw, (4, 4), "T_cw", "(..., V, 4, 4)")
    if kpts.dim() < 3 or K.dim() < 3 or T_cw.dim() < 3:
        raise ValueError("kpts, K and T_cw need a view dimension: (..., V, N, 2), (..., V, 3, 3), "
                         "(..., V, 4, 4)")
    V = kpts.shape[-3]
    if V < 2 or K.shape[-3] != V or T_cw.shape[-3] != V:
        raise ValueError(
            f"need V >= 2 views consistently: kpts {tuple(kpts.shape)}, K {tuple(K.shape)}, "
            f"T_cw {tuple(T_cw.shape)}"
        )
    if weights is not None and (weights.dim() < 2 or tuple(weights.shape[-2:]) != tuple(kpts.shape[-3:-1])):
        raise ValueError(
            f"weights must be (..., V, N) = {tuple(kpts.shape[:-1])}, got {tuple(weights.shape)}"
        )
    out_dtype = _out_dtype(kpts)
    f64 = torch.float64
    kpts_, K_, T_ = kpts.to(f64), K.to(f64), T_cw.to(f64)
    w = torch.ones_like(kpts_[..., 0]) if weights is None else weights.to(f64)

    # Normalized world frame X = c + s * X', i.e. P' = [s R, R c + t].
    C = camera_centers(T_)  # (..., V, 3)
    c = C.mean(-2, keepdim=True)  # (..., 1, 3)
    sq = (C - c).square().sum(-1).mean(-1)  # (...,)
    tiny = 1e-24
    s = torch.sqrt(torch.where(sq > tiny, sq, torch.ones_like(sq)))[..., None, None, None]  # (..., 1, 1, 1)
    R, t = T_[..., :3, :3], T_[..., :3, 3:]
    P = torch.cat([s * R, R @ c[..., None] + t], dim=-1)  # (..., V, 3, 4)

    xn = unproject(kpts_, torch.ones_like(kpts_[..., 0]), K_)  # (..., V, N, 3)
    P = P[..., None, :, :]  # (..., V, 1, 3, 4)
    r1 = xn[..., 0:1] * P[..., 2, :] - P[..., 0, :]  # (..., V, N, 4)
    r2 = xn[..., 1:2] * P[..., 2, :] - P[..., 1, :]
    A = torch.stack([r1, r2], dim=-2) * w[..., None, None]  # (..., V, N, 2, 4)
    M = torch.einsum("...vnki,...vnkj->...nij", A, A)  # (..., N, 4, 4)

    v, L = _SmallestEigenvector.apply(M, gap_eps)  # (..., N, 4), (..., N, 4)
    ok = (L[..., 1] - L[..., 0]) > gap_eps * L[..., 3].abs()
    hw = v[..., 3]
    ok = ok & (hw.abs() > w_eps) & torch.isfinite(v).all(-1)
    hw_safe = torch.where(ok, hw, torch.ones_like(hw))
    X = c + s[..., 0] * v[..., :3] / hw_safe[..., None]  # (..., N, 3)
    X = torch.where(ok[..., None], X, torch.zeros_like(X))

    used = w > 0  # (..., V, N)
    z = transform_points(T_, X[..., None, :, :])[..., 2]  # (..., V, N)
    cheiral = ((z > 0) | ~used).all(-2)
    valid = ok & cheiral & (used.sum(-2) >= 2)
    return X.to(out_dtype), valid


def triangulate_tracks(
    kpts: Tensor, K: Tensor, poses: Tensor, weights: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Confidence-weighted multi-view DLT of tracks: a thin batched wrapper of
    :func:`triangulate_dlt` (differentiable w.r.t. ``kpts``,
    ``weights`` and ``poses``).

    The rows of view ``v`` are scaled by ``weights[v] * f_v / mean(f)`` (``f``: mean focal length), so
    views with different intrinsics weigh their algebraic error in comparable pixel units.

    Args:
        kpts: ``(..., V, N, 2)`` pixels (any finite value where the weight is 0).
        K: ``(..., V, 3, 3)`` or a shared ``(3, 3)``.
        poses: ``(..., V, 4, 4)`` world-to-camera.
        weights: ``(..., V, N)`` confidences >= 0 (0: the view does not observe the track) or None (all 1).
    Returns:
        points: ``(..., N, 3)`` (0 where degenerate); valid: ``(..., N)`` bool (>= 2 used views,
        non-degenerate, in front of every used view).
    """
    if K.dim() == 2:
        K = K.expand(*poses.shape[:-2], 3, 3)
    focal = 0.5 * (K[..., 0, 0] + K[..., 1, 1])  # (..., V)
    scale = (focal / focal.mean(-1, keepdim=True))[..., None].to(kpts.dtype)  # (..., V, 1)
    w = scale.expand(kpts.shape[:-1]) if weights is None else weights * scale
    return triangulate_dlt(kpts, K, poses, w)


def triangulate_pair(
    kpts0: Tensor,
    kpts1: Tensor,
    K0: Tensor,
    K1: Tensor,
    T_0to1: Tensor,
    weights: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Two-view DLT triangulation in the frame of camera 0 (camera 0 = identity, camera 1 = ``T_0to1``).

    Args:
        kpts0, kpts1: ``(..., N, 2)`` pixels in images 0 and 1.
        K0, K1: ``(..., 3, 3)``.
        T_0to1: ``(..., 4, 4)``; its scale is arbitrary (the points scale with it).
        weights: ``(..., 2, N)`` per-view weights or None.
    Returns:
        points: ``(..., N, 3)`` in the camera-0 frame; valid: ``(..., N)`` bool.
    """
    _check_shape(kpts0, (2,), "kpts0", "(..., N, 2)")
    if kpts1.shape != kpts0.shape:
        raise ValueError(f"kpts1 shape {tuple(kpts1.shape)} must equal kpts0 shape {tuple(kpts0.shape)}")
    _check_shape(T_0to1, (4, 4), "T_0to1", "(..., 4, 4)")
    eye = torch.eye(4, dtype=T_0to1.dtype, device=T_0to1.device).expand_as(T_0to1)
    kpts = torch.stack(torch.broadcast_tensors(kpts0, kpts1), dim=-3)
    K = torch.stack(torch.broadcast_tensors(K0, K1), dim=-3)
    T = torch.stack([eye, T_0to1], dim=-3)
    return triangulate_dlt(kpts, K, T, weights)


def triangulation_angle(points: Tensor, centers: Tensor, weights: Tensor | None = None) -> Tensor:
    """Largest angle (degrees) between the viewing rays of each point over all pairs of (used) views.

    Uses ``atan2(|a x b|, a . b)`` (accurate for small angles). With two views this is the angle
    between both rays.

    Args:
        points: ``(..., N, 3)`` world points.
        centers: ``(..., V, 3)`` camera centres (see :func:`camera_centers`).
        weights: ``(..., V, N)`` or None; only pairs of views with positive weight count.
    Returns:
        ``(..., N)`` degrees in ``[0, 180]`` (0 with fewer than two used views).
    """
    _check_shape(points, (3,), "points", "(..., N, 3)")
    _check_shape(centers, (3,), "centers", "(..., V, 3)")
    V = centers.shape[-2]
    rays = points[..., None, :, :] - centers[..., :, None, :]  # (..., V, N, 3)
    i, j = torch.triu_indices(V, V, 1, device=points.device)
    a, b = rays[..., i, :, :], rays[..., j, :, :]  # (..., P, N, 3)
    ang = torch.atan2(torch.linalg.cross(a, b).norm(dim=-1), (a * b).sum(-1)) * (180.0 / math.pi)
    if weights is not None:
        used = weights > 0
        ang = torch.where(used[..., i, :] & used[..., j, :], ang, torch.zeros_like(ang))
    if ang.shape[-2] == 0:
        return torch.zeros(ang.shape[:-2] + ang.shape[-1:], dtype=ang.dtype, device=ang.device)
    return ang.amax(dim=-2)


def reprojection_residuals(points: Tensor, kpts: Tensor, K: Tensor, T_cw: Tensor) -> Tensor:
    """Pixel residuals ``project(T_cw X, K) - kpts`` of world points in each view.

    Points at or behind a camera give large (clamped, finite) residuals: mask them by cheirality.

    Args:
        points: ``(..., N, 3)`` world points.
        kpts: ``(..., V, N, 2)`` observed pixels.
        K: ``(..., V, 3, 3)``; T_cw: ``(..., V, 4, 4)``.
    Returns:
        ``(..., V, N, 2)`` residuals in pixels.
    """
    _check_shape(points, (3,), "points", "(..., N, 3)")
    _check_shape(kpts, (2,), "kpts", "(..., V, N, 2)")
    cam = transform_points(T_cw, points[..., None, :, :])  # (..., V, N, 3)
    return project(cam, K) - kpts
