"""The main job end to end on a reduced default preset (fast matcher only)."""

from __future__ import annotations

import json

from imatch_s2ld.demo import DemoConfig, main, run


def test_demo_writes_report(tmp_path):
    conf = DemoConfig(out=str(tmp_path / "demo"), matchers=("orb",), progress=False,
                      overrides=(("views", 5), ("video_frames", 3), ("eval_views", 3)))
    report = run(conf)
    out = tmp_path / "demo"
    assert json.loads((out / "report.json").read_text()) == json.loads(json.dumps(report))
    for split in ("wide-baseline", "held-out"):
        summary = report["results"][split]["orb"]
        assert summary["num_pairs"] > 0
        assert 0.0 <= summary["auc@20"] <= 100.0
        assert (out / f"auc_{split}.png").stat().st_size > 0
        assert (out / "eval" / split / "orb" / "summary.json").is_file()
    text = (out / "report.md").read_text()
    assert "| orb |" in text and "opencv-RANSAC 0.5px" in text


def test_demo_bad_matcher_is_one_line_error(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "d"), "--matchers", "nope", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("imatch demo: error:") and "nope" in err and "\n" not in err
