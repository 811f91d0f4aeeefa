"""S2LD's supervised loss: ground truth in the forward pass, gradients to every head, bf16, overfitting."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import max_grad

from helpers import raises_one_line
from imatch_s2ld.errors import InputError
from imatch_s2ld.models import S2LD

LOSS_TERMS = ("coarse", "fine", "uncertainty", "repeatability", "localisation", "triangulation")
HEADS = ("backbone", "keypoints", "descriptor", "transformer", "coarse", "fine")


def test_forward_with_supervision_appends_ground_truth(batch):
    torch.manual_seed(0)
    model = S2LD.from_config("tiny").train()
    pred = model(**model.batch_inputs(batch))
    gt = pred.gt
    B, N0, N1 = pred.scores.shape
    assert gt is not None and gt.matrix.shape == (B, N0, N1) and gt.matrix.dtype == torch.bool
    assert gt.warped0.shape == (B, N0, 2) and gt.valid0.shape == (B, N0)
    n_gt = int(gt.matrix.sum())
    assert n_gt > 20  # overlapping synthetic views have many ground-truth pairs
    assert int(pred.matches_extra.sum()) == n_gt
    eb, ei, ej = (t[pred.matches_extra] for t in (pred.matches_b, pred.matches_i, pred.matches_j))
    assert gt.matrix[eb, ei, ej].all()
    # each ground-truth pair: keypoint j lies within the radius of the warp of keypoint i
    radius = model.loss_fn.conf["gt_radius_px"]
    assert ((gt.warped0[eb, ei] - pred.kpts1[eb, ej]).norm(dim=-1) < radius).all()
    with pytest.raises(InputError, match="not both"):
        model(**model.batch_inputs(batch), extra_matches=(eb, ei, ej))


def test_loss_terms_and_gradients_reach_every_head(batch):
    torch.manual_seed(0)
    model = S2LD.from_config("tiny").train()
    pred = model(**model.batch_inputs(batch))
    out = model.loss(pred, batch)
    assert out.total.shape == () and out.total.dtype == torch.float32 and torch.isfinite(out.total)
    for key in ("coarse", "fine", "uncertainty", "repeatability", "localisation", "triangulation",
                "coarse_precision", "num_pred", "num_gt", "fine_err_px_l0", "fine_err_px_l1"):
        assert key in out.terms and not out.terms[key].requires_grad
    weighted = sum(out.terms[k] for k in LOSS_TERMS)
    assert torch.allclose(weighted, out.total.detach(), rtol=1e-5)
    out.total.backward()
    for head in HEADS:
        grads = [p.grad for p in getattr(model, head).parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), head
        assert any(g.abs().sum() > 0 for g in grads), head


def test_loss_without_supervision_is_a_clear_error(batch):
    model = S2LD.from_config("tiny")
    pred = model(batch["image0"], batch["image1"], batch["mask0"], batch["mask1"])
    with pytest.raises(InputError, match="supervision"):
        model.loss(pred, batch)
    with pytest.raises(InputError, match="depth0"):
        model.batch_inputs({k: v for k, v in batch.items() if k != "depth0"})


def test_bf16_autocast_on_cpu_gives_finite_loss_and_gradients(batch):
    torch.manual_seed(0)
    model = S2LD.from_config("tiny").train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pred = model(**model.batch_inputs(batch))
        out = model.loss(pred, batch)
    assert pred.scores.dtype == torch.float32  # scores are computed in float32
    assert out.total.dtype == torch.float32 and torch.isfinite(out.total)
    assert all(math.isfinite(out.terms[k].item()) for k in LOSS_TERMS)
    out.total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.slow
def test_tiny_model_overfits_two_pairs(batch):
    """Coarse precision of the predicted matches exceeds 0.9 within 200 steps (about 60 are needed)."""
    torch.manual_seed(0)
    model = S2LD.from_config("tiny").train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    history, first_coarse = [], None
    for _ in range(200):
        out = model.loss(model(**model.batch_inputs(batch)), batch)
        opt.zero_grad()
        out.total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        first_coarse = out.terms["coarse"].item() if first_coarse is None else first_coarse
        precision, n_pred = out.terms["coarse_precision"].item(), out.terms["num_pred"].item()
        history.append((round(precision, 3), n_pred))
        if n_pred >= 30 and precision > 0.9:
            break
    else:
        pytest.fail(f"no step with coarse precision > 0.9: {history[-10:]}")
    assert out.terms["coarse"].item() < 0.2 * first_coarse


def test_supervised_terms_are_parts_with_their_own_options(batch):
    from imatch_s2ld.models.loss_terms import TERMS
    from imatch_s2ld.models.s2ld_loss import S2LDLoss

    torch.manual_seed(0)
    model = S2LD.from_config("tiny")
    out = model.loss(model(**model.batch_inputs(batch)), batch)
    total = 0.0
    for name, cls in TERMS.items():
        assert cls.name == name and set(cls.default_conf) <= set(S2LDLoss.default_conf)
        for key in cls.outputs:
            assert f"{key}_weight" in cls.default_conf and key in out.terms
            total += float(out.terms[key])
    assert float(out.total) == pytest.approx(total, rel=1e-5)  # the total is the sum of the weighted terms
    off = S2LD.from_config("tiny", loss={"fine_weight": 0.0})
    off.load_state_dict(model.state_dict())
    out_off = off.loss(off(**off.batch_inputs(batch)), batch)
    assert float(out_off.terms["fine"]) == 0 and float(out_off.total) == pytest.approx(
        float(out.total) - float(out.terms["fine"]), rel=1e-5)


@pytest.mark.parametrize("mode", ["classification", "both"])
def test_classification_fine_loss_is_finite_and_trains_the_local_dense_stage(batch, mode):
    torch.manual_seed(0)
    only_fine = {k: 0.0 for k in ("coarse_weight", "uncertainty_weight", "repeatability_weight",
                                  "localisation_weight", "triangulation_weight")}
    model = S2LD.from_config("tiny", loss={"fine_loss": mode, **only_fine})
    out = model.loss(model(**model.batch_inputs(batch)), batch)
    assert torch.isfinite(out.total) and float(out.terms["fine"]) > 0
    out.total.backward()  # the fine term alone: its gradient reaches the local-dense stage
    assert max_grad(model, "fine") > 0
    l2 = S2LD.from_config("tiny", loss=only_fine)
    l2.load_state_dict(model.state_dict())
    out_l2 = l2.loss(l2(**l2.batch_inputs(batch)), batch)
    if mode == "both":  # the classification part comes on top of the L2 part
        assert float(out.terms["fine"]) > float(out_l2.terms["fine"])


def test_unknown_fine_loss_is_one_line():
    raises_one_line(S2LD.from_config, "tiny", loss={"fine_loss": "ce"},
                    match=r"^model.loss.fine_loss: expected one of l2, classification, both, got 'ce'$")


def test_gauss_newton_level_refines_gives_a_covariance_and_trains(batch):
    torch.manual_seed(0)
    model = S2LD.from_config("tiny", fine={"gauss_newton": {"iterations": 2}})
    pred = model(**model.batch_inputs(batch))
    assert len(pred.fine_levels) == 3 and pred.fine_levels[-1].information is not None
    gn = pred.fine_levels[-1]
    assert gn.information.shape == (len(pred.mkpts1), 2, 2) and bool((pred.muncertainty > 0).all())
    torch.testing.assert_close(pred.mkpts1, gn.expectation)
    out = model.loss(pred, batch)
    assert torch.isfinite(out.terms["gauss_newton"]) and float(out.terms["gauss_newton"]) != 0
    assert "gn_err_px" in out.terms
    out.total.backward()
    assert max_grad(model, "fine") > 0
    off = S2LD.from_config("tiny")  # without the level the term is zero
    assert float(off.loss(off(**off.batch_inputs(batch)), batch).terms["gauss_newton"]) == 0
