"""Fine-tuning loss: BA targets from a real window reconstruction, gradients into the matcher, one step."""

from __future__ import annotations

import pytest
import torch
from conftest import max_grad

from imatch_s2ld.ba import reconstruct_window
from imatch_s2ld.errors import InputError
from imatch_s2ld.finetune import open_video, resolve_intrinsics
from imatch_s2ld.finetune.loss import FinetuneLoss
from imatch_s2ld.finetune.targets import WindowTargets
from imatch_s2ld.finetune.window import match_window, window_pairs
from imatch_s2ld.models.s2ld import DEFAULT_CHECKPOINT, S2LD
from imatch_s2ld.synthetic import generate


@pytest.fixture(scope="module")
def window(tmp_path_factory):
    """A 4-frame synthetic video (unlabeled: only frames + intrinsics are used) and its tensors."""
    root = tmp_path_factory.mktemp("video")
    generate("default", root, seed=0, progress=False, layouts=("facade",), num_scenes=1, views=0,
             video_frames=7, eval_views=0, size=(320, 240))
    video = open_video(root / "video" / "facade_0000" / "frames", stride=2)
    K = resolve_intrinsics(video, root / "video" / "facade_0000" / "intrinsics.txt").K
    images = torch.stack([torch.from_numpy(video.frame(i))[None] for i in range(len(video))])
    return images, torch.as_tensor(K, dtype=torch.float32)


def test_one_finetuning_step_end_to_end(window):
    images, K = window
    model = S2LD.from_checkpoint(DEFAULT_CHECKPOINT)
    matches = match_window(model, images, window_pairs(len(images)))
    rec = reconstruct_window(matches.keypoints, matches.pairs, K.double().numpy())
    assert rec.success, rec.reason
    targets = WindowTargets.from_reconstruction(rec, matches)
    assert int((targets.weight > 0).sum()) > 100 and bool(targets.registered.all())
    model.requires_grad_(True)  # also the parts a pretrained default holds fixed: the gradient reaches them
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    out = FinetuneLoss()(model, images, K, matches, targets)
    assert model.training
    assert torch.isfinite(out.total) and float(out.total) > 0
    assert float(out.terms["num_pairs"]) == 6 and float(out.terms["num_targets"]) > 100
    assert 0 < float(out.terms["reproj_px"]) < 5
    out.total.backward()
    for group in ("backbone", "keypoints", "fine", "transformer"):
        assert max_grad(model, group) > 0, group
    torch.optim.Adam(model.parameters(), lr=1e-4).step()
    changed = sum(not torch.equal(before[n], p.detach()) for n, p in model.named_parameters())
    assert changed > 50


def test_failed_reconstruction_gives_no_targets(window):
    images, K = window
    model = S2LD.from_checkpoint(DEFAULT_CHECKPOINT)
    matches = match_window(model, images[:2], window_pairs(2))
    few = [type(p).create(p.i, p.j, p.matches[:5]) for p in matches.pairs]
    rec = reconstruct_window(matches.keypoints, few, K.double().numpy())
    assert not rec.success
    with pytest.raises(ValueError, match="window reconstruction failed: init: too few tracks"):
        WindowTargets.from_reconstruction(rec, matches)


def test_terms_are_parts_with_their_own_options_and_metrics():
    from imatch_s2ld.finetune.loss import DEFAULT_CONF, TERM_KEYS
    from imatch_s2ld.finetune.terms import TERMS, LossTerm

    for name, cls in TERMS.items():
        assert issubclass(cls, LossTerm) and cls.name == name
        assert f"{name}_weight" in cls.default_conf and set(cls.default_conf) <= set(DEFAULT_CONF)
        assert name in TERM_KEYS and set(cls.metrics) <= set(TERM_KEYS)
    loss = FinetuneLoss({"track_weight": 1.0})
    assert set(loss.terms) == set(TERMS)
    active = {n for n, t in loss.terms.items() if t.active}
    assert active == {"reprojection", "triangulation", "track"}  # matching: weight 0, not computed
    assert not loss.needs_tracks and FinetuneLoss({"matching_weight": 1.0}).needs_tracks
    assert FinetuneLoss({"reprojection_weight": 0.1, "reprojection_points": "prediction"}).needs_tracks
    with pytest.raises(InputError, match=r"^model.loss.track_weight: expected a number >= 0, got -1"):
        FinetuneLoss({"track_weight": -1})
    with pytest.raises(InputError, match=r"^model.loss.triangulation_levels: expected one of all, last"):
        FinetuneLoss({"triangulation_levels": "first"})
