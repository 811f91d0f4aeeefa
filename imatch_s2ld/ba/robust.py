"""Robust kernels on squared residual norms ``s = |r|^2`` (pixels^2), shared by every BA backend.

``rho(s)`` is the cost of one observation (``0.5 * rho`` enters the total, like Ceres), ``weight(s) =
rho'(s)`` is the IRLS weight of its residual. ``scale`` is the kernel width in pixels.

- ``none``:   ``rho = s``
- ``huber``:  ``rho = s`` if ``s <= c^2`` else ``2 c sqrt(s) - c^2``
- ``cauchy``: ``rho = c^2 log(1 + s / c^2)``
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import InputError

KERNELS = ("none", "huber", "cauchy")


def check_kernel(name: str) -> None:
    if name not in KERNELS:
        raise InputError(f"unknown robust kernel {name!r}; choose one of {KERNELS}")


def robust_rho(s: Tensor, kernel: str, scale: float) -> Tensor:
    """``(...) -> (...)`` robust cost of squared norms ``s``."""
    check_kernel(kernel)
    if kernel == "none":
        return s
    c2 = float(scale) ** 2
    if kernel == "huber":
        root = torch.sqrt(s.clamp_min(c2))
        return torch.where(s <= c2, s, 2.0 * float(scale) * root - c2)
    return c2 * torch.log1p(s / c2)


def robust_weight(s: Tensor, kernel: str, scale: float) -> Tensor:
    """``(...) -> (...)`` IRLS weights ``rho'(s)`` in ``(0, 1]``."""
    check_kernel(kernel)
    if kernel == "none":
        return torch.ones_like(s)
    c2 = float(scale) ** 2
    if kernel == "huber":
        return torch.where(s <= c2, torch.ones_like(s), float(scale) / torch.sqrt(s.clamp_min(c2)))
    return 1.0 / (1.0 + s / c2)
