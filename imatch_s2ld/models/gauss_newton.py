"""Feature-metric Gauss-Newton refinement (GN-Net, von Stumberg et al.) and its probabilistic loss.

Given a point ``u0`` of image 0 and an estimate ``x`` of its match in image 1, each step linearises the
feature residual ``r = F1(x) - F0(u0)`` (``F``: bilinearly sampled feature maps) with the Jacobian
``J = dF1/dx`` taken by central differences, and moves to the Gauss-Newton solution
``mu = x - H^-1 J^T r`` with ``H = J^T J + eps I``. ``H`` is the information matrix of the estimate: its
inverse is the match's covariance (:func:`covariance_std`). The GN loss (:func:`gauss_newton_loss`) is the
negative log-likelihood of the ground truth ``u1`` under ``N(mu, H^-1)``:
``e1 = 1/2 (u1 - mu)^T H (u1 - mu)`` plus ``e2 = log 2pi - 1/2 log|H|``; training it from random starts
around the ground truth shapes features whose GN step lands on the match with an honest uncertainty.
GN-Net's pitfalls: ``e2`` stalls when the features are small (normalise them), and nearest rather than
bilinear upsampling of the features.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from .sampling import sample_features

__all__ = ["GaussNewtonStep", "covariance_std", "gauss_newton_loss", "gauss_newton_refine"]


class GaussNewtonStep(NamedTuple):
    """The result of :func:`gauss_newton_refine`: ``mu`` ``(M, 2)`` pixels of image 1 and ``H`` ``(M, 2, 2)``
    the information matrix at the last linearisation."""

    mu: Tensor
    H: Tensor


def _sample(feat: Tensor, pts: Tensor, batch_index: Tensor, image_size: tuple[int, int],
            normalize: bool) -> Tensor:
    """``(M, C)`` features of ``feat`` ``(B, C, h, w)`` at ``pts`` ``(M, 2)`` of images ``batch_index``
    (unit length with ``normalize``)."""
    out = pts.new_zeros(pts.shape[0], feat.shape[1])
    for b in torch.unique(batch_index).tolist():
        sel = batch_index == b
        out[sel] = sample_features(feat[b: b + 1], pts[sel][None], image_size)[0]
    return torch.nn.functional.normalize(out, dim=-1) if normalize else out


def gauss_newton_refine(feat0: Tensor, feat1: Tensor, u0: Tensor, x: Tensor, batch_index: Tensor,
                        size0: tuple[int, int], size1: tuple[int, int], iterations: int = 3,
                        step_px: float = 1.0, eps: float = 1e-6, normalize: bool = False) -> GaussNewtonStep:
    """Refine matches ``x`` of points ``u0`` by Gauss-Newton steps on the feature residual.

    Args:
        feat0, feat1: ``(B, C, h, w)`` feature maps (any stride) of images of sizes ``size0``, ``size1``
            ``(H, W)``.
        u0: ``(M, 2)`` pixels of image 0; x: ``(M, 2)`` initial pixels of image 1 (the gradient flows
            through the features and ``u0``; ``x`` is detached between steps as in GN-Net).
        batch_index: ``(M,)`` long, the image pair of each match.
        iterations: GN steps (>= 1); step_px: central-difference step in pixels; eps: damping of ``H``;
        normalize: residuals of unit-length features (GN-Net: ``e2`` stalls on small features).
    Returns:
        :class:`GaussNewtonStep` (``mu``, ``H``) of the last step.
    """
    if u0.shape != x.shape or u0.ndim != 2 or u0.shape[-1] != 2:
        raise ValueError(f"u0 and x must both be (M, 2), got {tuple(u0.shape)} and {tuple(x.shape)}")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    f0 = _sample(feat0, u0, batch_index, size0, normalize)  # (M, C)
    eye = torch.eye(2, device=x.device, dtype=f0.dtype)
    h = float(step_px)
    mu, H = x.float(), None
    for _ in range(iterations):
        x = mu.detach()
        shifts = x.new_tensor([[h, 0.0], [-h, 0.0], [0.0, h], [0.0, -h]])
        pts = torch.cat([x, *(x + s for s in shifts)])  # (5M, 2)
        f = _sample(feat1, pts, batch_index.repeat(5), size1, normalize).view(5, -1, f0.shape[-1])
        r = f[0] - f0  # (M, C)
        J = torch.stack([(f[1] - f[2]) / (2 * h), (f[3] - f[4]) / (2 * h)], dim=-1)  # (M, C, 2)
        H = J.transpose(1, 2) @ J + eps * eye  # (M, 2, 2)
        g = (J.transpose(1, 2) @ r[..., None])[..., 0]  # (M, 2)
        mu = x - torch.linalg.solve(H, g)
    assert H is not None
    return GaussNewtonStep(mu, H)


def gauss_newton_loss(step: GaussNewtonStep, target: Tensor,
                      valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """GN-Net's loss of a refinement against the ground truth ``target`` ``(M, 2)``.

    Returns:
        ``(e1, e2)`` means over the valid matches: ``e1 = 1/2 (u1 - mu)^T H (u1 - mu)`` (the Mahalanobis
        error: pulls ``mu`` to the truth, weighted by the confidence) and ``e2 = log 2pi - 1/2 log|H|``
        (rewards confidence); their sum is the Gaussian negative log-likelihood. Zeros when nothing is valid.
    """
    valid = torch.ones(target.shape[0], dtype=torch.bool, device=target.device) if valid is None else valid
    if not bool(valid.any()):
        zero = step.mu.sum() * 0.0 + step.H.sum() * 0.0
        return zero, zero
    d = (target.float() - step.mu)[valid][..., None]  # (M, 2, 1)
    H = step.H[valid]
    e1 = 0.5 * (d.transpose(1, 2) @ H @ d)[:, 0, 0]
    e2 = math.log(2 * math.pi) - 0.5 * torch.logdet(H)
    return e1.mean(), e2.mean()


def covariance_std(H: Tensor) -> Tensor:
    """``(M,)`` radial standard deviation ``sqrt(trace(H^-1))`` in pixels of a refinement's covariance."""
    return torch.linalg.inv(H).diagonal(dim1=-2, dim2=-1).sum(-1).clamp_min(0).sqrt()
