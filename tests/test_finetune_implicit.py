"""``--ba-grad implicit``: the differentiable (Theseus, implicit-differentiation) BA of
:mod:`imatch_s2ld.finetune.implicit`, its finite-difference check, the FinetuneLoss wiring and its errors.

Tests that solve need theseus-ai (skipped without it); the option checks run everywhere. About 10 s.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from helpers import panning_images, raises_one_line
from imatch_s2ld.ba import make_synthetic_problem, solve
from imatch_s2ld.ba.tracks import PairMatches
from imatch_s2ld.finetune.cli import build_parser, conf_from_args, main
from imatch_s2ld.finetune.implicit import (
    WindowObservations,
    implicit_reprojection_loss,
    landmarks_from_targets,
    reprojection_cost,
    reprojection_residuals,
    solve_ba_implicit,
)
from imatch_s2ld.finetune.loss import FinetuneLoss
from imatch_s2ld.finetune.targets import WindowTargets
from imatch_s2ld.finetune.window import WindowMatches, match_window, window_pairs
from imatch_s2ld.models import S2LD

needs_theseus = pytest.mark.skipif(importlib.util.find_spec("theseus") is None,
                                   reason="theseus-ai not installed")

LSQ = {"robust_kernel": "none", "max_iterations": 20}
TIGHT = {"function_tolerance": 1e-14, "gradient_tolerance": 1e-14, "parameter_tolerance": 1e-14}


# ------------------------------------------------------------------------------- the layer
@needs_theseus
def test_shapes_and_noise_free_solution_is_the_initial_one():
    syn = make_synthetic_problem(3, 20, noise_px=0.0, seed=0)
    p = syn.problem
    xy = syn.gt_xy.clone().requires_grad_(True)
    sol = solve_ba_implicit(xy, p.obs_frame, p.obs_point, p.K[0], syn.gt_poses, syn.gt_points, conf=LSQ)
    assert sol.T_cw.shape == (3, 4, 4) and sol.X.shape == (20, 3)
    assert sol.T_cw.dtype == torch.float64 and sol.T_cw.requires_grad and sol.X.requires_grad
    torch.testing.assert_close(sol.T_cw.detach(), syn.gt_poses, atol=1e-9, rtol=0)
    torch.testing.assert_close(sol.X.detach(), syn.gt_points, atol=1e-9, rtol=0)
    assert sol.cost < 1e-12 and sol.extra["num_observations"] == p.num_observations
    r = reprojection_residuals(xy, p.obs_frame, p.obs_point, p.K[0], sol.T_cw, sol.X)
    assert r.shape == (p.num_observations, 2) and float(r.abs().max()) < 1e-8
    r.square().sum().backward()
    assert xy.grad.shape == xy.shape and torch.isfinite(xy.grad).all()


def test_bad_shapes_are_one_line_input_errors():
    syn = make_synthetic_problem(3, 20, noise_px=0.0, seed=0)
    p = syn.problem
    args = (p.obs_xy, p.obs_frame, p.obs_point, p.K[0], syn.gt_poses, syn.gt_points)
    bad = {
        "obs_xy must be": (p.obs_xy[:, :1], *args[1:]),
        "obs_frame must be": (args[0], p.obs_frame[:-1], *args[2:]),
        "obs_point has indices outside": (*args[:2], p.obs_point + 20, *args[3:]),
        "T_cw must be": (*args[:4], syn.gt_poses[:, :3], args[5]),
        "X must be": (*args[:5], syn.gt_points[:, :2]),
        "K must be": (*args[:3], torch.eye(4), *args[4:]),
    }
    for needle, a in bad.items():
        raises_one_line(lambda a=a: reprojection_residuals(*a), match=needle)
    if importlib.util.find_spec("theseus") is not None:
        raises_one_line(lambda: solve_ba_implicit(*args, obs_weight=torch.ones(3)),
                        match="obs_weight must be")
        nan = p.obs_xy.clone()
        nan[0, 0] = float("nan")
        raises_one_line(lambda: solve_ba_implicit(nan, *args[1:]), match="non-finite")


@needs_theseus
def test_implicit_gradient_matches_finite_differences():
    """Loss weights differ from the BA's (least squares, uniform weights), so the term through the BA
    solution does not vanish: the implicit gradient matches central differences of solve -> loss, the
    direct term alone (solution held fixed) does not."""
    syn = make_synthetic_problem(3, 20, noise_px=0.5, seed=0)
    p = syn.problem
    opt = solve(p, TIGHT)  # start at the optimum: the re-solve only has to follow the perturbations
    g = torch.Generator().manual_seed(0)
    w = torch.rand(p.num_observations, generator=g, dtype=torch.float64) + 0.5

    def loss(xy, conf=LSQ):
        return implicit_reprojection_loss(xy, p.obs_frame, p.obs_point, p.K[0], opt.poses, opt.points,
                                          weight=w, ba_weight=torch.ones_like(w), scale_px=1.0, conf=conf)

    xy = p.obs_xy.clone().requires_grad_(True)
    value, sol = loss(xy)
    value.backward()
    xd = p.obs_xy.clone().requires_grad_(True)  # the direct term: solution held fixed
    r = reprojection_residuals(xd, p.obs_frame, p.obs_point, p.K[0], sol.T_cw.detach(), sol.X.detach())
    ((w * reprojection_cost(r, 1.0)).sum() / w.sum()).backward()
    xo = p.obs_xy.clone().requires_grad_(True)  # the same through the option
    loss(xo, {**LSQ, "through_solution": False})[0].backward()
    torch.testing.assert_close(xo.grad, xd.grad)
    h = 1e-4
    for _ in range(3):
        v = torch.randn(p.obs_xy.shape, generator=g, dtype=torch.float64)
        with torch.no_grad():
            fd = float((loss(p.obs_xy + h * v)[0] - loss(p.obs_xy - h * v)[0]) / (2 * h))
        implicit, direct = float((xy.grad * v).sum()), float((xd.grad * v).sum())
        assert abs(implicit - fd) < 0.01 * abs(fd), (implicit, fd)
        assert abs(direct - fd) > 5 * abs(implicit - fd), (direct, implicit, fd)


@needs_theseus
def test_robust_ba_gradient_is_close_to_finite_differences():
    """With a Cauchy BA, Theseus' Hessian is the IRLS one (no kernel curvature): a few percent off."""
    syn = make_synthetic_problem(3, 20, noise_px=0.5, seed=1)
    p = syn.problem
    conf = {"robust_kernel": "cauchy", "robust_scale_px": 2.0, "max_iterations": 20}
    opt = solve(p, {**TIGHT, "robust_kernel": "cauchy", "robust_scale_px": 2.0})
    w = torch.linspace(0.5, 1.5, p.num_observations, dtype=torch.float64)

    def loss(xy):
        return implicit_reprojection_loss(xy, p.obs_frame, p.obs_point, p.K[0], opt.poses, opt.points,
                                          weight=w, ba_weight=torch.ones_like(w), scale_px=1.0, conf=conf)[0]

    xy = p.obs_xy.clone().requires_grad_(True)
    loss(xy).backward()
    v = torch.randn(p.obs_xy.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        fd = float((loss(p.obs_xy + 1e-4 * v) - loss(p.obs_xy - 1e-4 * v)) / 2e-4)
    assert abs(float((xy.grad * v).sum()) - fd) < 0.1 * abs(fd)


@needs_theseus
def test_unobservable_landmark_is_held_fixed():
    """A landmark seen along (nearly) parallel rays (moved 1e7 units away) is held fixed (its Gauss-Newton
    block would be singular); the others still carry the gradient."""
    syn = make_synthetic_problem(3, 20, noise_px=0.5, seed=2)
    p = syn.problem
    opt = solve(p, TIGHT)
    X = opt.points.clone()
    C = -(opt.poses[0, :3, :3].T @ opt.poses[0, :3, 3])
    X[3] = C + 1e7 * (X[3] - C) / (X[3] - C).norm()
    xy = p.obs_xy.clone().requires_grad_(True)
    value, sol = implicit_reprojection_loss(xy, p.obs_frame, p.obs_point, p.K[0], opt.poses, X)
    assert sol.extra["held_points"] == 1 and sol.status.startswith("schur: converged")
    held = torch.autograd.grad(sol.X[3].sum(), xy, retain_graph=True)[0]
    free = torch.autograd.grad(sol.X[4].sum(), xy, retain_graph=True)[0]
    assert float(held.abs().max()) == 0 and float(free.abs().max()) > 0
    value.backward()
    assert torch.isfinite(xy.grad).all() and float(xy.grad.abs().max()) > 0


@needs_theseus
def test_phase1_solvers_agree():
    """Theseus' LM as the phase-1 solver (from a perturbed start) reaches the Schur LM's solution and
    gives the same gradient."""
    syn = make_synthetic_problem(3, 20, noise_px=0.5, seed=2)
    p = syn.problem
    grads, costs = [], []
    for solver in ("schur", "theseus"):
        xy = p.obs_xy.clone().requires_grad_(True)
        value, sol = implicit_reprojection_loss(xy, p.obs_frame, p.obs_point, p.K[0], p.pose_matrices(),
                                                p.points, conf={"solver": solver, "max_iterations": 100})
        value.backward()
        assert sol.status.startswith(solver) and sol.cost < 0.1 * sol.cost_init
        grads.append(xy.grad)
        costs.append(sol.cost)
    assert abs(costs[0] - costs[1]) < 1e-6 * costs[0]
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=1e-4 * float(grads[0].abs().max()))


# ------------------------------------------------------------------------------- FinetuneLoss
def _tiny_window(model: S2LD) -> tuple[torch.Tensor, torch.Tensor, WindowMatches, WindowTargets]:
    """3 panning frames, K with f = 100, camera moving +0.2 along x per frame, landmarks at depth 5
    (4 px disparity per frame) through interior keypoints of frame 0; each landmark's target in frames
    1 and 2 is the detected keypoint nearest its projection (so S2LD keypoints carry the tracks)."""
    images = panning_images()
    K = torch.tensor([[100.0, 0.0, 63.5], [0.0, 100.0, 47.5], [0.0, 0.0, 1.0]])
    pairs = window_pairs(3)
    wm = match_window(model, images, pairs)
    T = torch.eye(4).repeat(3, 1, 1)
    T[:, 0, 3] = -0.2 * torch.arange(3.0)
    kp = [torch.as_tensor(x).float() for x in wm.keypoints.xy]
    kmax = max(len(x) for x in kp)
    xy, weight = torch.zeros(3, kmax, 2), torch.zeros(3, kmax)
    track, depth = torch.full((3, kmax), -1, dtype=torch.long), torch.zeros(3, kmax)
    inside = torch.nonzero((kp[0][:, 0] > 16) & (kp[0][:, 0] < 110) & (kp[0][:, 1] > 8)
                           & (kp[0][:, 1] < 88)).flatten()[:40]
    ray = torch.cat([kp[0][inside], torch.ones(len(inside), 1)], 1) @ torch.linalg.inv(K).T
    X = 5.0 * ray  # frame 0 is the world frame
    used = [set() for _ in range(3)]
    for lm, (k0, Xl) in enumerate(zip(inside.tolist(), X)):
        proj = [(K @ (Xl + T[f, :3, 3]))[:2] / 5.0 for f in range(3)]
        near = [k0] + [int((kp[f] - proj[f]).norm(dim=-1).argmin()) for f in (1, 2)]
        if any(near[f] in used[f] for f in range(3)):
            continue
        for f in range(3):
            used[f].add(near[f])
            xy[f, near[f]], weight[f, near[f]], track[f, near[f]], depth[f, near[f]] = proj[f], 1.0, lm, 5.0
    targets = WindowTargets(xy, weight, track, depth, T, torch.ones(3, dtype=torch.bool))
    no_matches = [PairMatches.create(a, b, np.zeros((0, 2), np.int64)) for a, b in pairs]
    return images, K, WindowMatches(wm.keypoints, no_matches), targets


@needs_theseus
def test_finetune_loss_implicit_gradient_reaches_s2ld(tiny_checkpoint):
    torch.manual_seed(0)
    model = S2LD.from_checkpoint(tiny_checkpoint)
    images, K, matches, targets = _tiny_window(model)
    assert int((targets.track >= 0).sum()) >= 60
    torch.testing.assert_close(landmarks_from_targets(targets, K)[0].float(),
                               5.0 * torch.linalg.inv(K) @ torch.cat([targets.xy[0, targets.track[0] == 0][0],
                                                                        torch.ones(1)]), atol=1e-5, rtol=0)
    conf = {"reprojection_weight": 1.0, "triangulation_weight": 0.0, "ba_grad": "implicit",
            "reprojection_points": "prediction"}
    model.train()
    out = FinetuneLoss(conf)(model, images, K, matches, targets)
    assert model.training
    assert torch.isfinite(out.total) and float(out.total) > 0
    assert float(out.terms["num_targets"]) > 60 and float(out.terms["num_pairs"]) == 3
    out.total.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert all(torch.isfinite(g).all() for g in grads.values())
    for head in ("backbone", "keypoints", "fine"):
        assert max(float(g.abs().max()) for n, g in grads.items() if n.startswith(head + ".")) > 0, head
    fixed = FinetuneLoss({**conf, "ba_grad": "fixed"})(model, images, K, matches, targets)
    assert float(fixed.terms["num_targets"]) == float(out.terms["num_targets"])


@needs_theseus
def test_window_observations_two_per_match():
    obs = WindowObservations()
    lm = torch.tensor([0, 1])
    obs.add_pair(0, 2, lm, torch.zeros(2, 2), torch.ones(2, 2), torch.ones(2))
    assert len(obs) == 4
    raises_one_line(lambda: obs.add_pair(0, 1, lm, torch.zeros(3, 2), torch.ones(2, 2), torch.ones(2)),
                    match="add_pair")


# ------------------------------------------------------------------------------- options
def test_ba_grad_option_errors(monkeypatch):
    raises_one_line(lambda: FinetuneLoss({"ba_grad": "unrolled"}),
                    match=r"--ba-grad: expected one of fixed, implicit")
    raises_one_line(lambda: FinetuneLoss({"ba_grad": "implicit", "reprojection_weight": 0.0}),
                    match="reprojection_weight is 0.0: set it > 0")
    raises_one_line(lambda: FinetuneLoss({"ba_grad": "implicit", "reprojection_weight": 1.0,
                                          "implicit_ba": {"max_iterations": -1}}),
                    match="max_iterations must be >= 0")
    import imatch_s2ld.ba.backends.theseus_ba as theseus_ba

    monkeypatch.setattr(theseus_ba, "th", None)  # as if `import theseus` had failed
    raises_one_line(lambda: FinetuneLoss({"ba_grad": "implicit", "reprojection_weight": 1.0}),
                    match=r"^--ba-grad implicit needs theseus-ai: pip install")
    FinetuneLoss()  # the default (fixed) never needs it


def test_cli_maps_ba_grad_and_refuses_bad_values(tmp_path, capsys, monkeypatch):
    args = build_parser().parse_args(["--video", str(tmp_path), "--out", str(tmp_path / "o"), "--ba-grad",
                                      "implicit", "--geometry-from", "both"])
    conf = conf_from_args(args)
    assert conf["model"]["loss"]["ba_grad"] == "implicit" and conf["model"]["geometry_from"] == "both"
    args = build_parser().parse_args(["--video", str(tmp_path), "--out", str(tmp_path / "o")])
    assert conf_from_args(args)["model"]["loss"]["ba_grad"] == "fixed"
    import imatch_s2ld.ba.backends.theseus_ba as theseus_ba

    monkeypatch.setattr(theseus_ba, "th", None)
    cases = {
        "choice": (["--ba-grad", "unrolled"], "invalid choice: 'unrolled'"),
        "override": (["model.loss.ba_grad=unrolled"], "--ba-grad: expected one of fixed, implicit"),
        "weight 0": (["--ba-grad", "implicit", "model.loss.reprojection_weight=0"],
                     "reprojection_weight is 0"),
        "no theseus": (["--ba-grad", "implicit", "model.loss.reprojection_weight=1"], "needs theseus-ai"),
    }
    for name, (extra, needle) in cases.items():
        out = tmp_path / name.replace(" ", "_")
        rc = main(["--video", str(tmp_path), "--out", str(out), *extra])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and needle in err[0], (name, err)
        assert not out.exists(), name
