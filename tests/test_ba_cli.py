"""``imatch ba``: solve a saved or synthetic problem; one-line errors."""

from __future__ import annotations

import json

import numpy as np

from imatch_s2ld.ba import BundleProblem, make_synthetic_problem
from imatch_s2ld.ba.cli import main


def test_synthetic_save_and_resolve(tmp_path, capsys):
    prob, out = tmp_path / "p.npz", tmp_path / "r.npz"
    assert main(["--synthetic", "4x150", "--save-problem", str(prob), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "schur: ok (converged" in text and "vs ground truth" in text
    with np.load(out) as z:
        assert z["poses"].shape == (4, 4, 4) and json.loads(str(z["summary"]))["success"]
    assert main([str(prob), "--robust-kernel", "cauchy", "--conf", '{"max_iterations": 3}']) == 0


def test_failed_solve_exits_1(tmp_path, capsys):
    p = make_synthetic_problem(3, 60, seed=2).problem
    xy = p.obs_xy.clone()
    xy[0] = float("nan")
    bad = BundleProblem.from_arrays(p.K, p.pose_matrices(), p.points, p.obs_frame, p.obs_point, xy)
    bad.save(tmp_path / "n.npz")
    assert main([str(tmp_path / "n.npz")]) == 1
    assert "FAILED (non-finite values in obs_xy" in capsys.readouterr().out


def test_bad_input_one_line_errors(tmp_path, capsys):
    assert main([str(tmp_path / "missing.npz")]) == 2
    assert main([]) == 2
    assert main(["--synthetic", "4by5"]) == 2
    assert main(["--synthetic", "3x50", "--conf", '{"max_iter": 1}']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("imatch ba: error: ") for line in err)
    assert "missing.npz" in err[0] and "max_iter" in err[3]
