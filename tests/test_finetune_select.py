"""Window selection with ``--geometry-from sift``: every window is reconstructed once from SIFT before
training, windows failing the quality gate are left out, the others' reconstructions are reused."""

from __future__ import annotations

import pytest
import torch

from imatch_s2ld.errors import InputError
from imatch_s2ld.finetune import open_video, resolve_intrinsics
from imatch_s2ld.finetune.data import VideoWindows
from imatch_s2ld.finetune.model import FinetuneModel, reason_kind
from imatch_s2ld.finetune.results import ProbeBA
from imatch_s2ld.finetune.run import select_windows
from imatch_s2ld.models.s2ld import DEFAULT_CHECKPOINT, S2LD
from imatch_s2ld.synthetic import generate


@pytest.fixture(scope="module")
def windows(tmp_path_factory):
    root = tmp_path_factory.mktemp("select")
    generate("default", root, seed=1, progress=False, layouts=("facade",), num_scenes=1, views=2,
             video_frames=9, eval_views=0, size=(320, 240))
    video = open_video(root / "video" / "facade_0000" / "frames")
    K = resolve_intrinsics(video, root / "video" / "facade_0000" / "intrinsics.txt").K
    return VideoWindows(video, K, length=4, spacing=2)


def test_reason_kind_drops_numbers_and_details():
    assert reason_kind("weak: 26 landmarks (need 80)") == "weak: N landmarks"
    assert reason_kind("init: only 1.5 deg parallax") == "init: only N deg parallax"


def test_usable_windows_are_solved_once_and_reused(windows):
    model = FinetuneModel(S2LD.from_checkpoint(DEFAULT_CHECKPOINT),
                          {"geometry_from": "sift", "min_points": 20})
    selection = select_windows(model, windows)
    subset, sel = selection.train_set, selection.summary()
    assert sel["windows"] == len(windows) and sel["usable"] == len(subset) > 0
    assert selection.source == "sift" and selection.usable == subset.indices
    assert sel["usable"] + sum(sel["rejected"].values()) == len(windows)
    assert set(subset.reconstructions) == set(subset.indices)  # the geometry travels with the data
    batch = subset.collate([subset[0]])
    cached = batch["geometry"][0]
    assert cached.success and cached is subset.reconstructions[subset.indices[0]]
    item = subset[0]
    out = model(**model.batch_inputs(batch))  # the carried reconstruction, not a new one
    assert float(out["skipped"]) == 0, model.last_reason
    assert float(out["ba_rms_px"]) == pytest.approx(float(cached.ba.rms_px))
    assert float(out["time_ba_s"]) < 1e-3
    fresh = model.independent_reconstruction(item["images"], item["K"])  # deterministic: same poses
    assert torch.allclose(fresh.ba.poses, cached.ba.poses, atol=1e-6)


def test_no_usable_window_is_a_clear_error(windows):
    model = FinetuneModel(S2LD.from_checkpoint(DEFAULT_CHECKPOINT),
                          {"geometry_from": "sift", "min_points": 10**6})
    with pytest.raises(InputError, match=r"no window .* usable sift reconstruction .*landmarks"):
        select_windows(model, windows)


def test_matcher_geometry_keeps_every_window(windows):
    model = FinetuneModel(S2LD.from_checkpoint(DEFAULT_CHECKPOINT), {"geometry_from": "matcher"})
    selection = select_windows(model, windows)
    assert selection.train_set is windows and selection.usable is None and selection.summary() is None


def _probe(rows: list[dict]) -> ProbeBA:
    return ProbeBA(rows, sum(r["success"] for r in rows), None, None, None, None)


def test_probe_common_compares_the_same_windows():
    from imatch_s2ld.finetune.report import probe_common

    before = _probe([{"window": 0, "success": True, "ba_rms_px": 0.4, "num_points": 100},
                     {"window": 5, "success": False, "ba_rms_px": None, "num_points": None}])
    after = _probe([{"window": 0, "success": True, "ba_rms_px": 0.3, "num_points": 120},
                    {"window": 5, "success": True, "ba_rms_px": 0.9, "num_points": 50}])
    c = probe_common(before, after)  # window 5 (reconstructed only after) stays out of both means
    assert c == {"windows": 1, "ba_rms_px_before": 0.4, "ba_rms_px_after": 0.3,
                 "num_points_before": 100.0, "num_points_after": 120.0, "observations": 0,
                 "obs_rms_px_before": None, "obs_rms_px_after": None, "obs_median_px_before": None,
                 "obs_median_px_after": None}
    assert probe_common(None, after) is None


def test_probe_common_compares_the_same_observations():
    """Only observations with the same (frame, anchor) at the same anchor position in both probes
    count; an observation only one matcher has, or whose anchor moved, stays out."""
    from imatch_s2ld.finetune.report import probe_common

    def row(obs):
        return _probe([{"window": 0, "success": True, "ba_rms_px": 1.0, "num_points": 3,
                        "observations": obs}])

    before = row([[0, 1, 10.0, 20.0, 0.3], [1, 1, 10.0, 20.0, 0.4], [1, 2, 30.0, 40.0, 2.0],
                  [2, 7, 50.0, 50.0, 1.0]])
    after = row([[0, 1, 10.1, 20.0, 0.0], [1, 1, 10.1, 20.0, 0.3], [1, 5, 1.0, 1.0, 3.0],
                 [2, 7, 52.0, 50.0, 0.1]])  # (2, 7): the anchor moved by 2 px, not the same keypoint
    c = probe_common(before, after)
    assert c["observations"] == 2
    assert c["obs_rms_px_before"] == pytest.approx((0.5 * (0.3**2 + 0.4**2)) ** 0.5)
    assert c["obs_rms_px_after"] == pytest.approx((0.5 * 0.3**2) ** 0.5)
    assert c["obs_median_px_before"] == pytest.approx(0.35)
    assert c["obs_median_px_after"] == pytest.approx(0.15)


def test_training_statistics_flag_a_collapsing_matcher():
    from imatch_s2ld.finetune.report import collapsed, training_statistics

    steady = [{"step": i + 1, "s2ld_matches": 800.0 + i, "num_tracks": 270.0} for i in range(10)]
    stats = training_statistics(steady)
    assert stats["s2ld_matches_first"] == pytest.approx(800.5) and stats["s2ld_matches_last"] == 808.5
    assert stats["collapse"] is False and stats["num_tracks_last"] == 270.0
    falling = [{"step": i + 1, "s2ld_matches": 800.0 / (i + 1)} for i in range(10)]
    assert training_statistics(falling)["collapse"] is True
    assert training_statistics([{"step": 1, "loss": 1.0}])["collapse"] is None  # not logged: no verdict
    assert collapsed(100.0, 201.0) is True and collapsed(100.0, 51.0) is False and collapsed(0.0, 5.0) is None
