"""Fine-tuning end to end: the window step (gradients, skipped windows), geometry sources, BA on a
synthetic window, the CLI (one step, resume, report contract) and its bad-input errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pycolmap
import pytest
import torch
from conftest import max_grad

from imatch_s2ld.ba import reconstruct_window
from imatch_s2ld.ba.tracks import Keypoints, PairMatches
from imatch_s2ld.errors import InputError
from imatch_s2ld.finetune import open_video, resolve_intrinsics
from imatch_s2ld.finetune.cli import main
from imatch_s2ld.finetune.data import VideoWindows
from imatch_s2ld.finetune.geometry import merge_window_matches, sift_window_matches
from imatch_s2ld.finetune.model import FinetuneModel
from imatch_s2ld.finetune.report import SUMMARY_KEYS, best_metric, common_observations
from imatch_s2ld.finetune.selfcheck import PseudoPair, pseudo_pairs, self_check, track_check
from imatch_s2ld.finetune.targets import WindowTargets, fundamental, track_matches
from imatch_s2ld.finetune.window import WindowMatches, match_window, window_pairs
from imatch_s2ld.geometry.epipolar import sampson_distance
from imatch_s2ld.models.s2ld import DEFAULT_CHECKPOINT, S2LD
from imatch_s2ld.synthetic import generate

FAST = ["--no-progress", "--cpu", "preflight.windows=2", "probe_windows=2", "eval.viz=1",
        "model.min_points=20",  # a 9-frame 320x240 test video has few landmarks per window
        "--window-spacing", "2"]  # and is too short for the default spacing (4: 13 frames per window)


@pytest.fixture(scope="module")
def scene(facade_video):
    """A 9-frame synthetic video with ground truth (used only by the checks) and 4 held-out views."""
    return facade_video


@pytest.fixture(scope="module")
def window(scene):
    video = open_video(scene["frames"])
    K = resolve_intrinsics(video, scene["intrinsics"]).K
    return VideoWindows(video, K, length=4, spacing=2)


def _batch(windows, index=0):
    return torch.utils.data.default_collate([windows[index]])


# ------------------------------------------------------------------------------- window step
@pytest.mark.parametrize("source", ["matcher", "both"])
def test_window_step_gradient_reaches_the_matcher(window, source):
    net = S2LD.from_checkpoint(DEFAULT_CHECKPOINT)
    model = FinetuneModel(net, {"geometry_from": source, "min_points": 20, "trainable": "all",
                                 "loss": {"reprojection_weight": 0.1}})
    out = model(**model.batch_inputs(_batch(window)))
    assert float(out["skipped"]) == 0, model.last_reason
    assert float(out["num_targets"]) > 50 and float(out["ba_rms_px"]) < float(out["ba_rms_init_px"])
    out["total"].backward()
    for group in ("backbone", "keypoints", "transformer", "fine"):
        assert max_grad(net, group) > 0, group
    loss = model.loss(out, {})
    assert set(loss.terms) >= {"reprojection", "triangulation", "ba_rms_px", "num_tracks", "skipped"}


def test_sift_geometry_triangulates_s2ld_tracks_with_the_sift_poses(window):
    """Poses from SIFT tracks; S2LD's epipolar-consistent matches form tracks triangulated with them."""
    net = S2LD.from_checkpoint(DEFAULT_CHECKPOINT)
    model = FinetuneModel(net, {"geometry_from": "sift", "min_points": 20,
                                 "loss": {"reprojection_weight": 1.0, "matching_weight": 1.0,
                                          "reprojection_points": "prediction"}})
    out = model(**model.batch_inputs(_batch(window)))
    assert float(out["skipped"]) == 0, model.last_reason
    assert float(out["num_targets"]) > 50 and float(out["reproj_px"]) < 3.0
    assert float(out["triangulation"]) > 0 and float(out["pseudo_positives"]) > float(out["pseudo_negatives"])
    out["total"].backward()
    assert any(p.grad is not None and float(p.grad.abs().max()) > 0 for p in net.parameters())


def test_default_step_needs_no_s2ld_tracks(window, monkeypatch):
    """The defaults (SIFT geometry, triangulation term on every local-dense level, only the local-dense
    stage and its feature layers trainable): the no-gradient matching pass is not run, and only the
    trainable parameters get a gradient."""
    import imatch_s2ld.finetune.model as model_module

    def no_pass(*args, **kwargs):
        raise AssertionError("match_window must not run")

    monkeypatch.setattr(model_module, "match_window", no_pass)
    net = S2LD.from_checkpoint(DEFAULT_CHECKPOINT)
    model = FinetuneModel(net, {"min_points": 20})
    assert not model.needs_tracks
    out = model(**model.batch_inputs(_batch(window)))
    assert float(out["skipped"]) == 0, model.last_reason
    assert float(out["triangulation"]) > 0 and float(out["num_targets"]) > 50
    assert float(out["s2ld_matches"]) > 50 and float(out["s2ld_matches"]) == float(out["num_matches"])
    out["total"].backward()
    for group in ("fine", "backbone:fine"):
        assert max_grad(net, group) > 0, group
    groups = net.parameter_groups()
    trainable = tuple(p + "." for p in groups["fine"] + groups["backbone:fine"])
    fixed = [n for n, p in net.named_parameters() if not n.startswith(trainable)]
    assert fixed and all(not net.get_parameter(n).requires_grad and net.get_parameter(n).grad is None
                         for n in fixed)
    loss = {"reprojection_points": "prediction", "reprojection_weight": 0.1}
    assert FinetuneModel(net, {"loss": loss}).needs_tracks
    assert FinetuneModel(net, {"loss": {"matching_weight": 1.0}}).needs_tracks
    assert FinetuneModel(net, {"geometry_from": "matcher"}).needs_tracks


def test_keypoint_reprojection_pulls_detections_not_the_local_dense_stage(window):
    """``reprojection_points: keypoints``: the term moves the detected keypoints of S2LD's tracks
    (built from the gradient pass itself, triangulated with the SIFT BA poses) towards their landmark
    projections (repeatable detections); the local-dense (fine) head gets no gradient."""
    net = S2LD.from_checkpoint(DEFAULT_CHECKPOINT)
    loss = {"reprojection_weight": 1.0, "triangulation_weight": 0.0, "reprojection_points": "keypoints"}
    model = FinetuneModel(net, {"min_points": 20, "loss": loss, "trainable": "all"})
    assert not model.needs_tracks
    out = model(**model.batch_inputs(_batch(window)))
    assert float(out["skipped"]) == 0, model.last_reason
    assert float(out["num_targets"]) > 50 and 0 < float(out["reproj_px"]) < 3.0
    inputs = model.batch_inputs(_batch(window))  # the same targets as a separate no-gradient pass
    rec = model.independent_reconstruction(inputs["images"], inputs["K"])
    matches = match_window(net, inputs["images"], window_pairs(len(inputs["images"])))
    targets = WindowTargets.from_poses(rec, matches, inputs["K"])
    assert int((targets.weight > 0).sum()) == int(out["num_targets"])
    out["total"].backward()
    assert max_grad(net, "keypoints") > 0 and max_grad(net, "fine") == 0
    with pytest.raises(InputError, match="reprojection_points: expected one of prediction, keypoints"):
        FinetuneModel(net, {"loss": {"reprojection_points": "dense"}})
    with pytest.raises(InputError, match="triangulation_grad: expected one of both, prediction, got 'fine'"):
        FinetuneModel(net, {"loss": {"triangulation_grad": "fine"}})


def test_triangulation_term_supervises_every_local_dense_level(window):
    """Level k+1 starts from level k's detached estimate: only ``triangulation_levels: all`` trains the
    wide first level; ``last`` leaves it without gradient."""
    grads = {}
    for levels in ("all", "last"):
        net = S2LD.from_checkpoint(DEFAULT_CHECKPOINT)
        loss = {"reprojection_weight": 0.0, "triangulation_levels": levels}
        model = FinetuneModel(net, {"min_points": 20, "loss": loss})
        out = model(**model.batch_inputs(_batch(window)))
        assert float(out["skipped"]) == 0, model.last_reason
        out["total"].backward()
        grads[levels] = [max((float(p.grad.abs().max()) for n, p in net.named_parameters()
                              if n.startswith(f"fine.levels.{k}.") and p.grad is not None), default=0.0)
                         for k in range(len(net.fine.levels))]
    assert all(g > 0 for g in grads["all"])
    assert grads["last"][0] == 0 and grads["last"][-1] > 0
    with pytest.raises(InputError, match="triangulation_levels: expected one of all, last, got 'first'"):
        FinetuneModel(S2LD.from_checkpoint(DEFAULT_CHECKPOINT), {"loss": {"triangulation_levels": "first"}})


def test_triangulation_gate_leaves_out_matches_off_the_epipolar_geometry(window):
    """``triangulation_gate_px``: matches farther than the gate (Sampson, BA relative pose) leave the
    term; a gate no match passes leaves no term, a gate every match passes changes nothing."""
    values = {}
    for gate in (None, 1e-9, 1e9):
        net = S2LD.from_checkpoint(DEFAULT_CHECKPOINT)
        model = FinetuneModel(net, {"min_points": 20, "loss": {"triangulation_gate_px": gate}})
        out = model(**model.batch_inputs(_batch(window)))
        assert float(out["skipped"]) == 0, model.last_reason
        values[gate] = float(out["triangulation"])
    assert values[None] > 0 and values[1e-9] == 0 and values[1e9] == pytest.approx(values[None], rel=1e-6)
    for bad in (0, -1.0, "far", True):
        with pytest.raises(InputError, match="triangulation_gate_px: expected a positive number of pixels"):
            FinetuneModel(S2LD.from_checkpoint(DEFAULT_CHECKPOINT), {"loss": {"triangulation_gate_px": bad}})


def test_track_term_reaches_every_level_and_is_off_by_default(window):
    """``track_weight``: the keypoints of a window frame predicted in two or more later frames are
    triangulated from all their observations; the term is finite, counted, and trains every level."""
    net = S2LD.from_checkpoint(DEFAULT_CHECKPOINT)
    off = FinetuneModel(net, {"min_points": 20})(**FinetuneModel.batch_inputs(_batch(window)))
    assert float(off["track"]) == 0 and float(off["num_output_tracks"]) == 0
    net = S2LD.from_checkpoint(DEFAULT_CHECKPOINT)
    model = FinetuneModel(net, {"min_points": 20, "loss": {"track_weight": 1.0, "triangulation_weight": 0.0}})
    out = model(**model.batch_inputs(_batch(window)))
    assert float(out["skipped"]) == 0, model.last_reason
    assert float(out["num_output_tracks"]) > 0 and 0 < float(out["track"]) < float("inf")
    assert float(out["total"].detach()) == pytest.approx(float(out["track"]))
    out["total"].backward()
    for k in range(len(net.fine.levels)):
        assert max((float(p.grad.abs().max()) for n, p in net.named_parameters()
                    if n.startswith(f"fine.levels.{k}.") and p.grad is not None), default=0.0) > 0


def test_frozen_modules_get_no_gradient(window):
    net = S2LD.from_checkpoint(DEFAULT_CHECKPOINT)
    model = FinetuneModel(net, {"min_points": 20, "trainable": "all", "freeze": ["transformer", "coarse"]})
    out = model(**model.batch_inputs(_batch(window)))
    out["total"].backward()
    params = dict(net.named_parameters())
    frozen = {n for n in params if n.startswith(("transformer.", "coarse."))}
    assert frozen and all(not params[n].requires_grad and params[n].grad is None for n in frozen)
    assert all(params[n].requires_grad for n in set(params) - frozen)
    for group in ("backbone", "fine", "keypoints"):
        assert max_grad(net, group) > 0, group
    with pytest.raises(InputError, match=r"model.freeze: no S2LD parameters under 'transformr' \(modules: "):
        FinetuneModel(S2LD.from_checkpoint(DEFAULT_CHECKPOINT), {"freeze": ["transformr"]})


def test_trainable_selection_refuses_what_cannot_train():
    """``model.trainable``: a list of module prefixes or "all"; a typo, a bare string, nothing left to
    train, or a keypoint reprojection term on a fixed keypoint head: one line each."""
    net = S2LD.from_checkpoint(DEFAULT_CHECKPOINT)
    cases = {
        r"model.trainable: no S2LD parameters under 'fien' \(modules: ": {"trainable": ["fien"]},
        r"model.trainable: expected a list of module names or 'all', got 'fine'": {"trainable": "fine"},
        "no S2LD parameter left to fine-tune": {"trainable": ["fine"], "freeze": ["fine"]},
        "trains the keypoints .*, which are not trainable": {"loss": {"reprojection_weight": 0.1}},
    }
    for needle, conf in cases.items():
        with pytest.raises(InputError, match=needle):
            FinetuneModel(net, conf)
    model = FinetuneModel(net, {"trainable": ["fine", "keypoints"], "freeze": ["fine.levels.0"],
                                "loss": {"reprojection_weight": 0.1}})
    keypoint_layers = tuple(p + "." for p in net.parameter_groups()["keypoints"])
    trained = {n for n, p in model.net.named_parameters() if p.requires_grad}
    assert any(n.startswith(keypoint_layers) for n in trained)
    assert all(n.startswith((*keypoint_layers, "fine.levels.1.")) for n in trained)
    assert not any(n.startswith(("fine.levels.0.", "transformer.")) for n in trained)


def test_skipped_window_still_joins_the_gradient_sync(window, monkeypatch):
    net = S2LD.from_checkpoint(DEFAULT_CHECKPOINT)
    model = FinetuneModel(net, {"min_points": 20})
    monkeypatch.setattr(model, "_step_gate", lambda rec, n: (False, "test: failed"))
    out = model(**model.batch_inputs(_batch(window)))
    assert float(out["skipped"]) == 1 and model.last_reason == "test: failed"
    assert float(out["total"].detach()) == 0 and out["total"].requires_grad
    assert np.isnan(float(out["reprojection"])) and float(out["num_tracks"]) > 0
    out["total"].backward()
    params = [p for p in net.parameters() if p.requires_grad]
    assert all(p.grad is not None and float(p.grad.abs().max()) == 0 for p in params)  # every one joins


def test_track_matches_are_transitive():
    ta = torch.tensor([3, -1, 0, 7])
    tb = torch.tensor([-1, 0, 3, 5, 9])
    i, j = track_matches(ta, tb)
    assert sorted(zip(i.tolist(), j.tolist())) == [(0, 2), (2, 1)]
    e = track_matches(torch.full((2,), -1), torch.zeros(0, dtype=torch.long))
    assert e[0].numel() == 0 and e[1].numel() == 0


def test_fundamental_matrix_of_a_known_motion():
    K = torch.tensor([[100.0, 0, 50], [0, 100, 40], [0, 0, 1]], dtype=torch.float64)
    T = torch.eye(4, dtype=torch.float64)
    T[:3, 3] = torch.tensor([1.0, 0, 0])  # camera b = camera a shifted: horizontal epipolar lines
    X = torch.tensor([[0.3, -0.2, 4.0], [-1.0, 0.5, 6.0]], dtype=torch.float64)
    xa = (K @ X.T).T
    xb = (K @ (X + T[:3, 3]).T).T
    xa, xb = xa[:, :2] / xa[:, 2:], xb[:, :2] / xb[:, 2:]
    F = fundamental(T, K, K)
    d = sampson_distance(xa, xb, F, squared=False)
    assert torch.allclose(d, torch.zeros(2, dtype=torch.float64), atol=1e-9)
    assert float(sampson_distance(xa, xb + torch.tensor([0.0, 2.0]), F, squared=False).min()) > 0.5


def test_batch_inputs_rejects_several_windows(window):
    batch = torch.utils.data.default_collate([window[0], window[1]])
    with pytest.raises(ValueError, match="one window per batch"):
        FinetuneModel.batch_inputs(batch)


# ------------------------------------------------------------------------------- geometry sources
def test_merge_window_matches_offsets_the_second_set():
    a = WindowMatches(Keypoints.create([np.zeros((3, 2)), np.ones((2, 2))]),
                      [PairMatches.create(0, 1, [[0, 1], [2, 0]])])
    b = WindowMatches(Keypoints.create([np.full((2, 2), 5.0), np.full((4, 2), 7.0)]),
                      [PairMatches.create(0, 1, [[1, 3]], [0.5])])
    m = merge_window_matches(a, b)
    assert list(m.keypoints.counts) == [5, 6]
    assert m.pairs[0].matches.tolist() == [[0, 1], [2, 0], [4, 5]]
    assert m.pairs[0].confidence.tolist() == [1.0, 1.0, 0.5]
    assert np.allclose(m.keypoints.xy[1][5], 7.0)


def test_sift_tracks_reconstruct_a_window(window):
    gray = [cv2.cvtColor(window.video.frame_rgb(f), cv2.COLOR_RGB2GRAY) for f in window.frames(0)]
    sift = sift_window_matches(gray, window_pairs(4))
    assert len(sift.pairs) == 6 and min(len(p.matches) for p in sift.pairs) > 20
    rec = reconstruct_window(sift.keypoints, sift.pairs, window.K.double().numpy())
    assert rec.success, rec.reason


def _rotation_deg(Ra: np.ndarray, Rb: np.ndarray) -> float:
    c = (np.trace(Ra.T @ Rb) - 1) / 2
    return float(np.degrees(np.arccos(np.clip(c, -1, 1))))


def test_ba_recovers_the_poses_of_a_synthetic_window(scene, window):
    """A window's tracks (the default geometry source, SIFT) + BA give the true relative rotations and
    translation directions of its 4 frames."""
    net = S2LD.from_checkpoint(DEFAULT_CHECKPOINT)
    frames = window.frames(0)
    images = window[0]["images"]
    model = FinetuneModel(net, {"geometry_from": "sift"})
    s2ld = match_window(net, images, window_pairs(4))
    matches = model.geometry_matches(images, window_pairs(4), s2ld)
    rec = reconstruct_window(matches.keypoints, matches.pairs, window.K.double().numpy())
    assert rec.success, rec.reason
    by_name = {im.name: im for im in pycolmap.Reconstruction(str(scene["gt"])).images.values()}
    gt = []
    for f in frames:
        T = np.eye(4)
        T[:3] = by_name[window.video.names[f]].cam_from_world().matrix()
        gt.append(T)
    est = {f: T for f, T in zip(rec.init.frames, rec.ba.poses.double().numpy())}
    assert len(est) == 4
    for a in range(4):
        for b in range(a + 1, 4):
            G = gt[b] @ np.linalg.inv(gt[a])
            E = est[b] @ np.linalg.inv(est[a])
            assert _rotation_deg(G[:3, :3], E[:3, :3]) < 0.2
            tg, te = G[:3, 3] / np.linalg.norm(G[:3, 3]), E[:3, 3] / np.linalg.norm(E[:3, 3])
            assert np.degrees(np.arccos(np.clip(tg @ te, -1, 1))) < 3.0, (a, b)


def test_self_check_scores_against_the_sift_ba_poses(scene, window):
    """The label-free self-check: pairs of the window with their SIFT BA relative poses (close to the
    truth), scored like the evaluation; a wrong pseudo pose gives AUC 0."""
    net = S2LD.from_checkpoint(DEFAULT_CHECKPOINT)
    model = FinetuneModel(net, {"min_points": 20})
    pairs = pseudo_pairs(model, window, [0, 1], 1)  # one window (the first), not in the cache: solved
    assert [(p.window, p.a, p.b) for p in pairs] == [(0, a, b) for a, b in window_pairs(4)]
    by_name = {im.name: im for im in pycolmap.Reconstruction(str(scene["gt"])).images.values()}

    def gt(f):
        T = np.eye(4)
        T[:3] = by_name[window.video.names[f]].cam_from_world().matrix()
        return T

    frames = window.frames(0)
    for p in pairs:
        G = gt(frames[p.b]) @ np.linalg.inv(gt(frames[p.a]))
        assert _rotation_deg(G[:3, :3], p.T_0to1[:3, :3]) < 0.2
    result = self_check(net, window, pairs)
    assert result["num_pairs"] == 6 and result["median_matches"] > 50 and result["num_failures"] == 0
    assert result["auc@20"] > 15 and result["auc@5"] <= result["auc@10"] <= result["auc@20"]
    truth = [PseudoPair(p.window, p.a, p.b, gt(frames[p.b]) @ np.linalg.inv(gt(frames[p.a]))) for p in pairs]
    assert abs(self_check(net, window, truth)["auc@20"] - result["auc@20"]) < 5  # tracks the truth
    turn = np.eye(4)
    turn[:3, :3] = cv2.Rodrigues(np.array([0.0, 0.6, 0.0]))[0]  # 34 degrees off
    wrong = [PseudoPair(p.window, p.a, p.b, turn @ p.T_0to1) for p in pairs]
    assert self_check(net, window, wrong)["auc@20"] == 0
    assert self_check(net, window, []) is None and pseudo_pairs(model, window, [0], 0) == []


def test_track_check_measures_output_tracks_at_the_fixed_poses(scene, window):
    """Output tracks of frame 0 triangulated with the SIFT BA poses reproject sub-pixel, like with the
    true poses; poses turned by 1 degree leave no more tracks and larger errors. Observations carry their
    anchor so two matchers compare on the same tracks."""
    net = S2LD.from_checkpoint(DEFAULT_CHECKPOINT)
    model = FinetuneModel(net, {"min_points": 20})
    pairs = pseudo_pairs(model, window, [0, 1], 1)
    result = track_check(net, window, pairs)
    assert result["windows"] == 1 and result["tracks"] > 20
    assert result["median_px"] < 1.0 and result["rms_px"] < 2.0
    obs = np.array(result["observations"])
    assert obs.shape[1] == 6 and set(obs[:, 0]) == {0} and set(obs[:, 1]) <= {0, 1, 2, 3}
    by_name = {im.name: im for im in pycolmap.Reconstruction(str(scene["gt"])).images.values()}
    frames = window.frames(0)

    def gt(f):
        T = np.eye(4)
        T[:3] = by_name[window.video.names[frames[f]]].cam_from_world().matrix()
        return T

    truth = track_check(net, window, [PseudoPair(p.window, p.a, p.b, gt(p.b) @ np.linalg.inv(gt(p.a)))
                                      for p in pairs])
    assert abs(truth["median_px"] - result["median_px"]) < 0.25
    turn = np.eye(4)
    turn[:3, :3] = cv2.Rodrigues(np.array([0.0, np.radians(1.0), 0.0]))[0]
    wrong = track_check(net, window, [PseudoPair(p.window, p.a, p.b, turn @ p.T_0to1) for p in pairs])
    assert wrong is None or (wrong["tracks"] <= result["tracks"]
                             and wrong["median_px"] > result["median_px"] + 0.3)
    same = common_observations(result["observations"], result["observations"])
    assert same["observations"] == len(obs) and same["obs_rms_px_before"] == same["obs_rms_px_after"]
    assert track_check(net, window, []) is None


# ------------------------------------------------------------------------------------------ CLI
@pytest.fixture(scope="module")
def small_scene(tmp_path_factory):
    """The CLI tests' video: 9 frames of 160x120 with long steps (0.25 m: every probe window reconstructs
    from S2LD's own tracks at this size) and 4 held-out views; 2-3x faster runs than ``scene``."""
    root = tmp_path_factory.mktemp("ft_small")
    generate("default", root, seed=1, progress=False, layouts=("facade",), num_scenes=1, views=0,
             video_frames=9, eval_views=4, size=(160, 120), video_step=0.25)
    video = root / "video" / "facade_0000"
    return {"frames": video / "frames", "intrinsics": video / "intrinsics.txt",
            "pairs": video / "eval" / "pairs_with_gt.txt"}


def _run(scene, out, *extra, eval_pairs=True):
    args = ["--video", str(scene["frames"]), "--intrinsics", str(scene["intrinsics"]), "--out", str(out),
            *FAST, *extra]
    if eval_pairs:
        args += ["--eval-pairs", str(scene["pairs"])]
    return main(args)


def test_one_step_end_to_end_and_report_contract(small_scene, tmp_path, capsys):
    out = tmp_path / "run"
    assert _run(small_scene, out, "--steps", "1", "--baselines", "orb", "--eval-every", "1") == 0
    printed = capsys.readouterr().out
    assert "AUC@5/10/20 before" in printed and "BA RMS on 2 probe windows" in printed
    assert "AUC@5/10/20 orb (baseline)" in printed
    report = json.loads((out / "report.json").read_text())
    summary = json.loads((out / "eval" / "after" / "summary.json").read_text())
    assert set(report["before"]) == set(summary) == set(report["after"]) == set(report["baselines"]["orb"])
    baseline = report["baselines"]["orb"]  # the same pairs and protocol as before/after
    assert baseline["num_pairs"] == summary["num_pairs"] and baseline["protocol"]["matcher"] == "orb"
    assert baseline["protocol"]["resize"] == summary["protocol"]["resize"]
    assert "| orb (baseline) |" in (out / "report.md").read_text()
    assert set(SUMMARY_KEYS) <= set(summary)
    assert report["finetune"]["steps"] == 1 and report["ba_probe"]["before"]["windows"] == 2
    assert report["ba_probe_predictions"]["after"]["windows"] == 2  # BA of the output matches' tracks
    common = report["ba_probe_predictions"]["common"]  # one step barely moves the anchors: most are shared
    assert common["windows"] == 0 or common["observations"] > 0
    assert common["observations"] == 0 or common["obs_rms_px_after"] > 0
    check = report["self_check"]  # label-free: AUC on the video's windows against their SIFT BA poses
    tracks = report["track_check"]  # label-free: output tracks' reprojection error at those poses
    assert tracks["before"]["tracks"] > 0 and tracks["common"]["observations"] > 0
    assert "observations" not in tracks["before"]  # the per-observation rows stay in before.json
    assert check["before"]["num_pairs"] == check["after"]["num_pairs"] > 0
    assert set(check["gain"]) == {"auc@5", "auc@10", "auc@20"} and "self-check on the video" in printed
    for name in ("report.md", "training.png", "model.pt", "checkpoints/last.pt", "config.yaml"):
        assert (out / name).is_file(), name
    assert report["pictures"] and all((out / p).is_file() for p in report["pictures"])
    tuned = S2LD.from_checkpoint(out / "model.pt")
    start = S2LD.from_checkpoint(DEFAULT_CHECKPOINT)
    pairs = zip(tuned.state_dict().values(), start.state_dict().values())
    assert any(not torch.equal(a, b) for a, b in pairs)
    assert "Relative pose on the evaluation pairs" in (out / "report.md").read_text()
    assert "Self-check on the video (no labels)" in (out / "report.md").read_text()
    (row,) = report["validation"]  # eval.every: the self-check and the evaluation pairs at step 1
    assert row["step"] == 1 and row["eval/auc@10"] == pytest.approx(report["after"]["auc@10"])
    assert not (out / "eval" / "step_000001").exists()  # the last step's evaluation is the "after" one
    assert row["self_check/auc@10"] == pytest.approx(check["after"]["auc@10"])
    assert report["best"]["metric"] == "self_check/auc@10" and (out / "best.pt").is_file()
    assert "During training" in (out / "report.md").read_text()


def test_several_videos_train_together(small_scene, tmp_path):
    second = tmp_path / "second"  # another recording of the same camera (here: the frames reversed)
    second.mkdir()
    frames = sorted(small_scene["frames"].iterdir())
    for k, f in enumerate(reversed(frames)):
        shutil.copy(f, second / f"{k:03d}{f.suffix}")
    out = tmp_path / "run"
    assert _run(small_scene, out, "--video", str(second), "--steps", "1", eval_pairs=False) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["video"] == [str(small_scene["frames"]), str(second)]
    assert report["finetune"]["window_selection"]["windows"] == 2 * (len(frames) - 6)  # 4 frames spaced 2
    assert "2 videos (" in (out / "report.md").read_text()


def test_best_metric_prefers_the_label_free_self_check():
    conf = {"train": {"best_metric": "auto"}}
    assert best_metric(conf, with_self_check=True, with_pairs=True) == "self_check/auc@10"
    assert best_metric(conf, with_self_check=False, with_pairs=True) == "eval/auc@10"
    assert best_metric(conf, with_self_check=False, with_pairs=False) is None
    assert best_metric({"train": {"best_metric": "eval/auc@5"}}, True, True) == "eval/auc@5"


def test_stop_resume_and_refuse_to_overwrite(small_scene, tmp_path, capsys):
    out = tmp_path / "run"
    assert _run(small_scene, out, "--steps", "2", "--eval-every", "1", "train.stop_after_steps=1",
                eval_pairs=False) == 0
    assert "continue with --resume" in capsys.readouterr().out
    assert not (out / "report.json").exists()
    last = out / "checkpoints" / "last.pt"
    good, config = last.read_bytes(), (out / "config.yaml").stat().st_mtime_ns
    ckpt = torch.load(last, weights_only=True)
    next(iter(ckpt["state_dict"].values())).view(-1)[0] = float("nan")  # corrupted behind the checksum
    torch.save(ckpt, last)
    assert _run(small_scene, out, "--steps", "2", "--resume", eval_pairs=False) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "last.pt: corrupted checkpoint" in err[0], err
    assert (out / "config.yaml").stat().st_mtime_ns == config  # refused before anything was written
    last.write_bytes(good)
    assert _run(small_scene, out, "--steps", "2", eval_pairs=False) == 2
    assert "already holds a fine-tuning run" in capsys.readouterr().err
    assert _run(small_scene, out, "--steps", "2", "--eval-every", "1", "--resume", eval_pairs=False) == 0
    report = json.loads((out / "report.json").read_text())
    # without labels the periodic check is the self-check alone; best.pt is kept by it across the resume
    assert [v["step"] for v in report["validation"]] == [1, 2]
    assert all(set(v) == {"step", "time_s", "self_check/auc@5", "self_check/auc@10", "self_check/auc@20",
                          "self_check/median_matches"} for v in report["validation"])
    best = report["best"]
    assert best["metric"] == "self_check/auc@10" and best["value"] == max(
        v["self_check/auc@10"] for v in report["validation"])
    assert torch.load(out / "best.pt", weights_only=True)["step"] == best["step"]
    assert report["finetune"]["steps"] == 2 and report["before"] is None and report["after"] is None
    assert any(p.startswith("matches/video_") for p in report["pictures"])  # pictures without eval pairs


# ------------------------------------------------------------------------------------ bad input
def _frames(src: Path, dst: Path, names: list[str]) -> Path:
    dst.mkdir(parents=True)
    files = sorted(src.glob("*.png"))
    for name, f in zip(names, files):
        shutil.copy(f, dst / name)
    return dst


def _bad_inputs(scene, tmp: Path) -> dict[str, tuple[list[str], str]]:
    frames, intr = scene["frames"], str(scene["intrinsics"])
    tmp.mkdir(parents=True)
    empty = tmp / "empty"
    empty.mkdir()
    two = _frames(frames, tmp / "two", ["a.png", "b.png"])
    corrupt = _frames(frames, tmp / "corrupt", [f"{i}.png" for i in range(6)])
    data = (corrupt / "3.png").read_bytes()
    (corrupt / "3.png").write_bytes(data[: len(data) // 3])  # valid header, truncated pixels
    mixed = _frames(frames, tmp / "mixed", [f"{i}.png" for i in range(6)])
    im = cv2.imread(str(mixed / "2.png"))
    cv2.imwrite(str(mixed / "2.png"), cv2.resize(im, (160, 120)))
    static = tmp / "static"
    static.mkdir()
    first = sorted(frames.glob("*.png"))[0]
    for i in range(8):
        shutil.copy(first, static / f"{i}.png")
    noise = tmp / "noise"  # nothing to match: no source reconstructs a window
    noise.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        cv2.imwrite(str(noise / f"{i}.png"), rng.integers(0, 256, (120, 160), dtype=np.uint8))
    bad_k = tmp / "K.txt"
    bad_k.write_text("1 0 0\n0 1\n")
    a_file = tmp / "a_file"
    a_file.write_text("x")
    bad_ckpt = tmp / "bad.pt"
    bad_ckpt.write_bytes(b"not a checkpoint")
    v = ["--intrinsics", intr]
    return {
        "empty folder": (["--video", str(empty), *v], "no frames"),
        "fewer than 3 frames": (["--video", str(two), *v], "at least 3 are needed"),
        "unreadable frame": (["--video", str(corrupt), *v], "3.png"),
        "mixed sizes": (["--video", str(mixed), *v], "2.png"),
        "static camera": (["--video", str(static), *v], "camera does not move"),
        "bad intrinsics": (["--video", str(frames), "--intrinsics", str(bad_k)], "K.txt"),
        "unreadable checkpoint": (["--video", str(frames), *v, "--init", str(bad_ckpt)], "bad.pt"),
        "missing checkpoint": (["--video", str(frames), *v, "--init", str(tmp / "none.pt")], "none.pt"),
        "missing eval pairs": (["--video", str(frames), *v, "--eval-pairs", str(tmp / "p.txt")], "p.txt"),
        "unknown baseline": (["--video", str(frames), *v, "--eval-pairs", str(scene["pairs"]), "--baselines",
                              "sift,nope"], "unknown matcher 'nope'"),
        "baselines without eval pairs": (["--video", str(frames), *v, "--baselines", "sift"],
                                         "--baselines needs --eval-pairs"),
        "bad geometry source": (["--video", str(frames), *v, "--geometry-from", "orb"], "--geometry-from"),
        "unknown override": (["--video", str(frames), *v, "model.los.x=1"], "los"),
        "bad loss weight": (["--video", str(frames), *v, "model.loss.track_weight=abc"],
                            "'model.loss.track_weight': expected a number, got 'abc'"),
        "negative loss weight": (["--video", str(frames), *v, "model.loss.matching_weight=-1"],
                                 "model.loss.matching_weight: expected a number >= 0"),
        "no usable window": (["--video", str(frames), *v, "model.min_registered=99"], "no window of"),
        "nothing reconstructs": (["--video", str(noise), *v], "windows could be reconstructed with "
                                 "--geometry-from sift (sift: 2x "),
        "nothing reconstructs, union": (["--video", str(noise), *v, "--geometry-from", "both"],
                                        "--geometry-from both (matcher: 2x "),
        "--out is a file": (["--video", str(frames), *v], "a_file: --out is a file"),
        "zero steps": (["--video", str(frames), *v, "--steps", "0"],
                       "train.max_steps: expected an integer >= 1"),
    }


def test_bad_input_one_line_exit_2_nothing_written(scene, tmp_path, capsys):
    cases = _bad_inputs(scene, tmp_path / "in")
    for name, (args, needle) in cases.items():
        out = tmp_path / "out" / name.replace(" ", "_").replace(",", "")
        if name == "--out is a file":
            out = tmp_path / "in" / "a_file"
        rc = main([*args, "--out", str(out), *FAST])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2, name
        assert len(err) == 1 and err[0].startswith("finetune_unlabeled.py: error:"), (name, err)
        assert needle in err[0], (name, err[0])
        assert not out.exists() or out.is_file(), name
        if name.startswith("nothing reconstructs, union"):
            assert "; sift: 2x " in err[0], err[0]  # the reasons of each source of the union
