"""Pooled AUC and the paired bootstrap of imatch_s2ld.eval.compare (and its script)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from imatch_s2ld.errors import InputError
from imatch_s2ld.eval.compare import compare, load_errors
from imatch_s2ld.geometry.metrics import pose_auc

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "compare_evaluations.py"


def _write(folder: Path, scene: str, errors: list[float | None]) -> None:
    (folder / scene).mkdir(parents=True, exist_ok=True)
    rows = [{"scene": scene, "name0": f"{i}.jpg", "name1": f"{i + 1}.jpg", "err_pose": e,
             "failure": "" if e is not None else "too few matches"} for i, e in enumerate(errors)]
    (folder / scene / "results.json").write_text(json.dumps(rows))


def test_pooled_auc_is_over_all_pairs_and_the_bootstrap_is_paired(tmp_path):
    _write(tmp_path / "a", "s1", [1.0, 2.0, None])
    _write(tmp_path / "a", "s2", [0.5, 30.0])
    _write(tmp_path / "b", "s1", [0.0, 0.0, 0.0])
    _write(tmp_path / "b", "s2", [0.0, 0.0])
    a, b = load_errors(tmp_path / "a"), load_errors(tmp_path / "b")
    assert len(a) == 5 and a[("s1", "2.jpg", "3.jpg")] == np.inf
    rows = compare(a, {"b": b, "a again": a}, samples=200)
    expected = pose_auc([1.0, 2.0, None, 0.5, 30.0])
    for t in (5, 10, 20):
        assert rows["baseline"][f"auc@{t}"] == pytest.approx(expected[f"auc@{t}"])
        assert rows["b"][f"auc@{t}"] == pytest.approx(100.0)  # every error 0
        assert rows["b"][f"diff@{t}"] == pytest.approx(100.0 - expected[f"auc@{t}"])
        assert rows["b"][f"std@{t}"] > 0
        assert rows["a again"][f"diff@{t}"] == 0 and rows["a again"][f"std@{t}"] == 0  # paired
    only = {("s2", "0.jpg", "1.jpg"), ("s2", "1.jpg", "2.jpg")}
    assert set(load_errors(tmp_path / "a", include=["s2"])) == only


def test_different_pairs_and_missing_results_are_one_line(tmp_path):
    _write(tmp_path / "a", "s1", [1.0, 2.0])
    _write(tmp_path / "b", "s1", [1.0])
    differ = r"^b: its pairs differ from the baseline's \(e\.g\. s1/1\.jpg/2\.jpg\)$"
    with pytest.raises(InputError, match=differ):
        compare(load_errors(tmp_path / "a"), {"b": load_errors(tmp_path / "b")})
    with pytest.raises(InputError, match="no results.json in a folder named s9"):
        load_errors(tmp_path / "a", include=["s9"])
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "results.json").write_text("{")
    with pytest.raises(InputError, match=r"results\.json: not an evaluation results\.json"):
        load_errors(tmp_path / "c")
    run = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "a"),
                          str(tmp_path / "nope")], capture_output=True, text=True)
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "nope: no results.json" in run.stderr


def test_script_prints_one_line_per_evaluation(tmp_path):
    _write(tmp_path / "a", "s1", [1.0, 2.0, 8.0])
    _write(tmp_path / "b", "s1", [0.5, 1.0, 4.0])
    run = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "a"),
                          str(tmp_path / "b"), "--samples", "50", "--out", str(tmp_path / "c.json")],
                         capture_output=True, text=True, check=True)
    lines = run.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith(str(tmp_path / "a")) and "(+0.00 +- 0.00)" in lines[0]
    assert set(json.loads((tmp_path / "c.json").read_text())) == {str(tmp_path / "a"), str(tmp_path / "b")}
