"""Feature-metric Gauss-Newton refinement (GN-Net) and its loss."""

from __future__ import annotations

import math

import pytest
import torch

from imatch_s2ld.models.gauss_newton import covariance_std, gauss_newton_loss, gauss_newton_refine

H, W = 64, 80


def _feature_map(shift=(0.0, 0.0), channels: int = 16, seed: int = 0) -> torch.Tensor:
    """``(1, C, H, W)`` smooth features: sinusoids of 9-20 px period, sampled at pixel centres of an image
    shifted by ``shift`` (x, y): ``F1(x) = F0(x - shift)``."""
    g = torch.Generator().manual_seed(seed)
    freq = (torch.rand(channels, 2, generator=g) - 0.5) * 2 * (2 * math.pi / 9)
    phase = torch.rand(channels, generator=g) * 2 * math.pi
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64),
                            indexing="ij")
    xs, ys = xs - shift[0], ys - shift[1]
    f = torch.sin(freq[:, 0, None, None] * xs + freq[:, 1, None, None] * ys + phase[:, None, None])
    return f[None].float()


def test_gn_step_converges_to_a_shifted_copy_within_a_tenth_of_a_pixel():
    shift = (2.3, -1.7)
    f0, f1 = _feature_map(), _feature_map(shift)
    g = torch.Generator().manual_seed(1)
    u0 = torch.rand(50, 2, generator=g) * torch.tensor([W - 30.0, H - 30.0]) + 15
    truth = u0 + torch.tensor(shift)
    angle = torch.rand(50, generator=g) * 2 * math.pi
    start = truth + 1.5 * torch.stack([angle.cos(), angle.sin()], -1)  # 1.5 px away
    step = gauss_newton_refine(f0, f1, u0, start, torch.zeros(50, dtype=torch.long), (H, W), (H, W),
                               iterations=5)
    err = (step.mu - truth).norm(dim=-1)
    assert step.mu.shape == (50, 2) and step.H.shape == (50, 2, 2)
    assert float(err.max()) < 0.1, float(err.max())
    std = covariance_std(step.H)
    assert std.shape == (50,) and bool((std > 0).all())


def test_gn_loss_is_the_gaussian_nll_and_has_gradients():
    f0 = _feature_map().requires_grad_(True)
    f1 = _feature_map((1.0, 0.5))
    u0 = torch.tensor([[30.0, 30.0], [40.0, 20.0]])
    truth = u0 + torch.tensor([1.0, 0.5])
    step = gauss_newton_refine(f0, f1, u0, truth + 0.8, torch.zeros(2, dtype=torch.long), (H, W), (H, W))
    e1, e2 = gauss_newton_loss(step, truth)
    d = (truth - step.mu)[..., None]
    assert float(e1) == pytest.approx(float((0.5 * d.transpose(1, 2) @ step.H @ d).mean()), rel=1e-5)
    nll2 = math.log(2 * math.pi) - 0.5 * torch.logdet(step.H)
    assert float(e2) == pytest.approx(float(nll2.mean()), rel=1e-5)
    (e1 + e2).backward()
    assert f0.grad is not None and float(f0.grad.abs().sum()) > 0
    at_truth = gauss_newton_loss(step._replace(mu=truth), truth)[0]
    assert float(at_truth) == 0.0  # e1 vanishes at the exact answer
    none = gauss_newton_loss(step, truth, torch.zeros(2, dtype=torch.bool))
    assert float(none[0]) == 0 and float(none[1]) == 0


def test_gn_bad_shapes():
    f, b = _feature_map(), torch.zeros(3, dtype=torch.long)
    with pytest.raises(ValueError, match="must both be"):
        gauss_newton_refine(f, f, torch.zeros(3, 2), torch.zeros(2, 2), b, (H, W), (H, W))
    with pytest.raises(ValueError, match="iterations"):
        gauss_newton_refine(f, f, torch.zeros(3, 2), torch.zeros(3, 2), b, (H, W), (H, W), iterations=0)
