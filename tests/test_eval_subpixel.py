"""Sub-pixel accuracy against exact ground truth (imatch_s2ld.eval.subpixel) and its script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from imatch_s2ld.eval.subpixel import summarize

REPO = Path(__file__).resolve().parents[1]


def test_summary_of_known_errors():
    errors = [np.array([0.2, 0.4, 0.8]), np.array([2.0, 4.0, 10.0])]
    stds = [np.array([0.1, 0.5, 1.0]), np.array([1.0, 3.0, 4.0])]
    levels = [[e + 0.1, e] for e in errors]
    s = summarize(errors, stds, levels, [1.0, 3.0])
    assert s["pairs"] == 2 and s["matches"] == 6
    assert s["mma@0.5px"] == pytest.approx(100 * 2 / 6) and s["mma@1px"] == pytest.approx(50.0)
    assert s["mma@3px"] == pytest.approx(100 * 4 / 6) and s["mma@5px"] == pytest.approx(100 * 5 / 6)
    assert s["median_error_px"] == pytest.approx(1.4)
    assert [lv["median_error_px"] for lv in s["levels"]] == pytest.approx([1.5, 1.4])
    assert s["std_error_spearman"] == pytest.approx(1.0)  # larger std, larger error: perfectly ranked
    assert s["within_1std"] == pytest.approx(100 * 2 / 6) and s["within_2std"] == pytest.approx(100 * 5 / 6)
    assert s["seconds_per_pair"] == 2.0
    empty = summarize([], [], [], [])
    assert empty["matches"] == 0 and np.isnan(empty["mma@1px"])


@pytest.mark.slow
def test_script_measures_the_shipped_checkpoint_on_generated_pairs(tmp_path):
    from imatch_s2ld.synthetic import generate

    generate("default", tmp_path / "syn", seed=4, progress=False, layouts=("facade",), num_scenes=1, views=5,
             video_frames=0, eval_views=0, size=(320, 240))
    out = tmp_path / "r.json"
    ckpt = REPO / "imatch_s2ld" / "weights" / "s2ld_default.pt"
    script = REPO / "scripts" / "measure_subpixel.py"
    cmd = [sys.executable, str(script), str(ckpt), "--data", str(tmp_path / "syn"), "--max-pairs", "2",
           "--resize", "320", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    (name, r), = json.loads(out.read_text()).items()
    assert r["pairs"] == 2 and r["matches"] > 50 and r["mma@5px"] >= r["mma@1px"] >= r["mma@0.5px"]
    assert r["median_error_px"] < 2 and len(r["levels"]) == 2 and "MMA@0.5/1/3/5 px" in proc.stdout
    sift = subprocess.run([*cmd[:2], "sift", *cmd[3:]], capture_output=True, text=True)  # a matcher by name
    assert sift.returncode == 0 and json.loads(out.read_text())["sift"]["mma@5px"] > 50
    bad = subprocess.run([*cmd[:3], "--data", str(tmp_path)], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().endswith("no scene_info/ folder (a MegaDepth-layout "
                                                               "dataset)")
