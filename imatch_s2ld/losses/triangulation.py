"""Triangulation regularizer: 3D consistency of predicted matches under supervising poses (and depth).

Each predicted match is triangulated with the supervising relative pose by the weighted DLT
(:func:`imatch_s2ld.geometry.triangulation.triangulate_pair`, differentiable w.r.t. both keypoints), and
penalised through a robust kernel for

(a) the reprojection error of the triangulated point in both images, divided by a per-view noise scale
    ``scale_px = sqrt(pixel_noise_px^2 + (focal * pose_noise_rad)^2)``: a dimensionless error, so the
    loss does not depend on the image resolution (``pixel_noise`` refers to images whose long side is
    ``pixel_noise_ref_size`` and is rescaled to ``image_size`` when given);
(b) when depth maps are given, the log-depth difference ``log(z_tri / z_map)`` (nearest-pixel depth,
    0 = unknown is ignored), divided by
    ``sqrt(log1p(depth_noise_rel)^2 + sigma_ray^2 / sin(angle)^2)`` with
    ``sigma_ray^2 = (pixel_noise_px / focal)^2 + pose_noise_rad^2``: the first-order relative depth noise of
    a point triangulated at ``angle`` from noisy rays, plus the noise of the depth map.

Gauge: the reprojection term is invariant to the scale of ``T_0to1`` (bundle-adjusted poses of arbitrary
scale are fine); only the depth term needs metric poses consistent with the depth maps — pass no depth
with BA poses (self-supervised fine-tuning).

Precision: inputs in half / bfloat16 are cast to float32 (float64 stays float64); the DLT itself solves in
float64. The outputs are float32 (or float64).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..conf import merge_conf
from ..errors import InputError
from ..geometry.camera import transform_points
from ..geometry.triangulation import (
    camera_centers,
    reprojection_residuals,
    triangulate_pair,
    triangulate_tracks,
    triangulation_angle,
)
from ..geometry.warp import sample_depth_nearest

KERNELS = ("l2", "cauchy", "geman_mcclure", "barron")


@dataclass(frozen=True)
class RegularizerOutput:
    """Result of :class:`TriangulationRegularizer` (``(..)`` = ``(B,)`` or nothing for unbatched input).

    Attributes:
        loss: scalar, weighted mean of ``per_match`` over valid matches (0 when none is valid).
        per_match: ``(.., M)`` robust cost (0 where not valid); differentiable.
        reproj_px: ``(.., M)`` mean reprojection error (pixels) in both views, NaN where not valid; detached.
        depth_rel: ``(.., M)`` mean ``|z_tri / z_map - 1|`` over views with depth, NaN where no depth or not
            valid; detached.
        valid: ``(.., M)`` bool.
        num_valid: number of valid matches.
    """

    loss: Tensor
    per_match: Tensor
    reproj_px: Tensor
    depth_rel: Tensor
    valid: Tensor
    num_valid: int


def robust_kernel(sq: Tensor, kernel: str = "cauchy", alpha: float = 1.0) -> Tensor:
    """Barron's general robust loss of a squared normalized error ``sq = (e / scale)^2``, elementwise.

    ``rho(sq) ~ sq / 2`` for small ``sq`` for every kernel. ``l2``: ``sq / 2``; ``cauchy``:
    ``log(1 + sq / 2)``; ``geman_mcclure``: ``2 sq / (sq + 4)``; ``barron``:
    ``|a - 2| / a * ((sq / |a - 2| + 1)^(a / 2) - 1)`` with shape ``alpha`` (2: L2, 0: Cauchy,
    -2: Geman-McClure).
    """
    if kernel == "barron":
        if abs(alpha - 2.0) < 1e-6:
            kernel = "l2"
        elif abs(alpha) < 1e-6:
            kernel = "cauchy"
        else:
            b = abs(alpha - 2.0)
            return b / alpha * (torch.pow(sq / b + 1.0, alpha / 2.0) - 1.0)
    if kernel == "l2":
        return 0.5 * sq
    if kernel == "cauchy":
        return torch.log1p(0.5 * sq)
    if kernel == "geman_mcclure":
        return 2.0 * sq / (sq + 4.0)
    raise InputError(f"unknown robust kernel '{kernel}' (known: {', '.join(KERNELS)})")


def _batch(x: Tensor | None, unbatched_dim: int) -> Tensor | None:
    if x is None:
        return None
    return x[None] if x.dim() == unbatched_dim else x


class TriangulationRegularizer(nn.Module):
    """Robust 3D-consistency loss of predicted matches under supervising poses and optional depth.

    Config (``default_conf``, merged strictly: an unknown key raises :class:`InputError`):
        kernel: robust kernel, one of ``l2``, ``cauchy``, ``geman_mcclure``, ``barron``.
        barron_alpha: shape of the ``barron`` kernel.
        pixel_noise: keypoint noise (pixels at long side ``pixel_noise_ref_size``).
        pixel_noise_ref_size: long image side ``pixel_noise`` refers to; used when ``image_size`` is given,
            otherwise ``pixel_noise`` is taken in pixels of the input.
        pose_noise_deg: angular noise of the supervising poses (GT or bundle-adjusted).
        depth_noise_rel: relative noise of the supervising depth maps.
        reproj_weight, depth_weight: weights of terms (a) and (b).
        min_angle_deg: matches triangulated under a smaller angle are masked out.
        detach_weights: stop the gradient into the confidence ``weights`` (so the network cannot lower the
            loss by lowering the confidence of hard matches).
    """

    default_conf: dict[str, Any] = {
        "kernel": "cauchy",
        "barron_alpha": 1.0,
        "pixel_noise": 1.0,
        "pixel_noise_ref_size": 640,
        "pose_noise_deg": 0.5,
        "depth_noise_rel": 0.05,
        "reproj_weight": 1.0,
        "depth_weight": 1.0,
        "min_angle_deg": 0.5,
        "detach_weights": True,
    }

    def __init__(self, conf: dict[str, Any] | None = None, **overrides: Any) -> None:
        super().__init__()
        merged = merge_conf(self.default_conf, {**(conf or {}), **overrides})
        if merged["kernel"] not in KERNELS:
            raise InputError(f"unknown robust kernel '{merged['kernel']}' (known: {', '.join(KERNELS)})")
        for key in ("pixel_noise", "depth_noise_rel"):
            if not float(merged[key]) > 0:
                raise InputError(f"'{key}' must be > 0, got {merged[key]!r}")
        if float(merged["pose_noise_deg"]) < 0:
            raise InputError(f"'pose_noise_deg' must be >= 0, got {merged['pose_noise_deg']!r}")
        self.conf = merged

    def _noise(self, image_size: tuple[int, int] | None) -> tuple[float, float]:
        """Keypoint noise (pixels of ``image_size``) and supervising-pose noise (radians)."""
        pix = float(self.conf["pixel_noise"])
        if image_size is not None and self.conf["pixel_noise_ref_size"]:
            pix = pix * max(image_size) / float(self.conf["pixel_noise_ref_size"])
        return pix, math.radians(float(self.conf["pose_noise_deg"]))

    def forward(
        self,
        kpts0: Tensor,
        kpts1: Tensor,
        K0: Tensor,
        K1: Tensor,
        T_0to1: Tensor,
        weights: Tensor | None = None,
        depth0: Tensor | None = None,
        depth1: Tensor | None = None,
        valid: Tensor | None = None,
        image_size: tuple[int, int] | None = None,
    ) -> RegularizerOutput:
        """Regularize predicted matches.

        Args:
            kpts0, kpts1: ``(B, M, 2)`` or ``(M, 2)`` matched pixels in images 0 and 1.
            K0, K1: ``(B, 3, 3)`` or ``(3, 3)``.
            T_0to1: ``(B, 4, 4)`` or ``(4, 4)`` supervising relative pose (any scale without depth).
            weights: ``(B, M)`` / ``(M,)`` match confidences (>= 0) or None (all 1).
            depth0, depth1: ``(B, H, W)`` / ``(H, W)`` depth maps (0 = unknown) or None.
            valid: ``(B, M)`` / ``(M,)`` bool mask of matches to use (e.g. padding) or None.
            image_size: ``(W, H)`` of the images the keypoints live in, to rescale ``pixel_noise``.
        Returns:
            :class:`RegularizerOutput` (unbatched fields for unbatched input).
        """
        unbatched = kpts0.dim() == 2
        if kpts0.dim() not in (2, 3) or kpts0.shape[-1] != 2 or kpts1.shape != kpts0.shape:
            raise ValueError(
                "kpts0 and kpts1 must both be (B, M, 2) or (M, 2), "
                f"got {tuple(kpts0.shape)}, {tuple(kpts1.shape)}"
            )
        dtype = torch.float64 if kpts0.dtype == torch.float64 else torch.float32
        k0, k1 = _batch(kpts0, 2).to(dtype), _batch(kpts1, 2).to(dtype)
        B, M = k0.shape[:2]
        Ks = [_batch(K, 2).to(dtype).expand(B, 3, 3) for K in (K0, K1)]
        T = _batch(T_0to1, 2).to(dtype).expand(B, 4, 4)
        dev = k0.device
        w = torch.ones(B, M, dtype=dtype, device=dev) if weights is None else _batch(weights, 1).to(dtype)
        if self.conf["detach_weights"]:
            w = w.detach()
        mask = torch.ones(B, M, dtype=torch.bool, device=dev) if valid is None else _batch(valid, 1).bool()
        if w.shape != (B, M) or mask.shape != (B, M):
            raise ValueError(f"weights and valid must be (B, M) = {(B, M)} or (M,)")
        d0, d1 = _batch(depth0, 2), _batch(depth1, 2)
        for name, d in (("depth0", d0), ("depth1", d1)):
            if d is not None and (d.dim() != 3 or d.shape[0] != B):
                raise ValueError(f"{name} must be (B, H, W) or (H, W), got {tuple(d.shape)}")

        # Noise model (per view, (B, 1)).
        focal = torch.stack([0.5 * (K[:, 0, 0] + K[:, 1, 1]) for K in Ks], dim=0)[..., None]  # (2, B, 1)
        pix, pose_rad = self._noise(image_size)
        scale_px = torch.sqrt(pix**2 + (focal * pose_rad) ** 2)  # (2, B, 1)
        sigma_ray2 = (pix / focal) ** 2 + pose_rad**2  # (2, B, 1)

        # Triangulate in camera 0; views weighted by focal so the algebraic error approximates pixels.
        vw = (focal / focal.mean(0, keepdim=True)).detach().expand(2, B, M).permute(1, 0, 2)  # (B, 2, M)
        X0, ok = triangulate_pair(k0, k1, Ks[0], Ks[1], T, weights=vw)
        X0 = X0.to(dtype)
        eye = torch.eye(4, dtype=dtype, device=dev).expand(B, 4, 4)
        T_cw = torch.stack([eye, T], dim=1)  # (B, 2, 4, 4)
        angle = triangulation_angle(X0.detach(), camera_centers(T_cw))  # (B, M)
        ok = ok & mask & (angle >= float(self.conf["min_angle_deg"])) & torch.isfinite(w) & (w >= 0)

        kk = torch.stack([k0, k1], dim=1)  # (B, 2, M, 2)
        res = reprojection_residuals(X0, kk, torch.stack(Ks, dim=1), T_cw)  # (B, 2, M, 2)
        ok = ok & torch.isfinite(res).all(-1).all(1)
        res = torch.where(ok[:, None, :, None], res, torch.zeros_like(res))
        sq_a = (res.square().sum(-1) / scale_px.permute(1, 0, 2).square()).mean(1)  # (B, M)
        kern, alpha = self.conf["kernel"], float(self.conf["barron_alpha"])
        cost = float(self.conf["reproj_weight"]) * robust_kernel(sq_a, kern, alpha)
        reproj_px = res.detach().norm(dim=-1).mean(1)

        depth_rel = torch.full((B, M), float("nan"), dtype=dtype, device=k0.device)
        if d0 is not None or d1 is not None:
            z = transform_points(T_cw, X0[:, None])[..., 2]  # (B, 2, M)
            zmap = torch.stack([
                torch.zeros_like(z[:, v]) if d is None else sample_depth_nearest(d.to(dtype), kp.detach())
                for v, (d, kp) in enumerate(((d0, k0), (d1, k1)))
            ], dim=1)  # (B, 2, M)
            has = (zmap > 0) & ok[:, None, :] & (z > 0)
            ratio = torch.where(has, z / torch.where(has, zmap, torch.ones_like(zmap)), torch.ones_like(z))
            sin_a = torch.sin(torch.deg2rad(angle)).clamp_min(1e-6)[:, None, :]  # (B, 1, M)
            sig = torch.sqrt(math.log1p(float(self.conf["depth_noise_rel"])) ** 2
                             + sigma_ray2.permute(1, 0, 2) / sin_a.square())  # (B, 2, M)
            n_has = has.sum(1)  # (B, M)
            sq_b = (torch.log(ratio) / sig).square().sum(1) / n_has.clamp_min(1)
            cost = cost + float(self.conf["depth_weight"]) * torch.where(
                n_has > 0, robust_kernel(sq_b, kern, alpha), torch.zeros_like(sq_b))
            rel = ((ratio - 1).abs() * has).sum(1).detach() / n_has.clamp_min(1)
            depth_rel = torch.where(n_has > 0, rel, depth_rel)

        per_match = torch.where(ok, cost, torch.zeros_like(cost))
        wv = torch.where(ok, w, torch.zeros_like(w))
        loss = (wv * per_match).sum() / wv.sum().clamp_min(torch.finfo(dtype).tiny)
        reproj_px = torch.where(ok, reproj_px, torch.full_like(reproj_px, float("nan")))
        out = RegularizerOutput(
            loss=loss,
            per_match=per_match[0] if unbatched else per_match,
            reproj_px=reproj_px[0] if unbatched else reproj_px,
            depth_rel=depth_rel[0] if unbatched else depth_rel,
            valid=ok[0] if unbatched else ok,
            num_valid=int(ok.sum().item()),
        )
        return out

    def tracks(
        self,
        kpts: Tensor,
        visible: Tensor,
        K: Tensor,
        T_cw: Tensor,
        weights: Tensor | None = None,
        image_size: tuple[int, int] | None = None,
    ) -> RegularizerOutput:
        """Multi-view form of term (a): each track (a keypoint and its predicted matches in several
        views) is triangulated by the weighted DLT from all its observations with the supervising poses,
        and penalised for the mean (over its observations) scaled reprojection error, through the same
        noise model and kernel as :meth:`forward`. Two views only constrain a match across the epipolar
        line; three or more also along it.

        Args:
            kpts: ``(V, N, 2)`` observed pixels of ``N`` tracks in ``V`` views (anything where not visible).
            visible: ``(V, N)`` bool, which views observe each track; tracks seen in < 2 views are invalid.
            K: ``(V, 3, 3)`` or ``(3, 3)``; T_cw: ``(V, 4, 4)`` world-to-camera poses (any scale).
            weights: ``(N,)`` track confidences (>= 0) or None (all 1).
            image_size: ``(W, H)`` of the images, to rescale ``pixel_noise``.
        Returns:
            :class:`RegularizerOutput` with ``(N,)`` fields (``depth_rel`` all NaN).
        """
        if kpts.dim() != 3 or kpts.shape[-1] != 2 or visible.shape != kpts.shape[:2]:
            raise ValueError(f"kpts must be (V, N, 2) and visible (V, N), got {tuple(kpts.shape)}, "
                             f"{tuple(visible.shape)}")
        V, N = visible.shape
        dtype = torch.float64 if kpts.dtype == torch.float64 else torch.float32
        dev = kpts.device
        Ks = (K if K.dim() == 3 else K[None]).to(dtype).expand(V, 3, 3)
        T = T_cw.to(dtype)
        if T.shape != (V, 4, 4):
            raise ValueError(f"T_cw must be (V, 4, 4) = {(V, 4, 4)}, got {tuple(T_cw.shape)}")
        vis = visible.bool()
        w = torch.ones(N, dtype=dtype, device=dev) if weights is None else weights.to(dtype)
        if self.conf["detach_weights"]:
            w = w.detach()
        focal = (0.5 * (Ks[:, 0, 0] + Ks[:, 1, 1]))[:, None]  # (V, 1)
        pix, pose_rad = self._noise(image_size)
        scale_px = torch.sqrt(pix**2 + (focal * pose_rad) ** 2)  # (V, 1)
        k = torch.where(vis[..., None], kpts.to(dtype), torch.zeros_like(kpts, dtype=dtype))
        X, ok = triangulate_tracks(k, Ks, T, weights=vis.to(dtype))  # weight 0: view not used
        X = X.to(dtype)
        angle = triangulation_angle(X.detach(), camera_centers(T), weights=vis.to(dtype))  # (N,)
        ok = ok & (angle >= float(self.conf["min_angle_deg"])) & torch.isfinite(w) & (w >= 0)
        res = reprojection_residuals(X, k, Ks, T)  # (V, N, 2)
        ok = ok & (torch.isfinite(res).all(-1) | ~vis).all(0)
        res = torch.where((ok[None] & vis)[..., None], res, torch.zeros_like(res))
        n_obs = vis.sum(0).clamp_min(1).to(dtype)
        sq = (res.square().sum(-1) / scale_px.square()).sum(0) / n_obs  # (N,)
        kern, alpha = self.conf["kernel"], float(self.conf["barron_alpha"])
        cost = float(self.conf["reproj_weight"]) * robust_kernel(sq, kern, alpha)
        per_match = torch.where(ok, cost, torch.zeros_like(cost))
        wv = torch.where(ok, w, torch.zeros_like(w))
        loss = (wv * per_match).sum() / wv.sum().clamp_min(torch.finfo(dtype).tiny)
        reproj_px = res.detach().norm(dim=-1).sum(0) / n_obs
        reproj_px = torch.where(ok, reproj_px, torch.full_like(reproj_px, float("nan")))
        return RegularizerOutput(
            loss=loss, per_match=per_match, reproj_px=reproj_px,
            depth_rel=torch.full_like(reproj_px, float("nan")), valid=ok, num_valid=int(ok.sum().item()),
        )
