"""The main job end to end on a reduced configuration: render, baselines, fine-tune, evaluate, report."""

from __future__ import annotations

import json

import pytest

from imatch_s2ld.data.pairs_file import read_pairs_file
from imatch_s2ld.demo import DemoConfig, main, run
from imatch_s2ld.errors import InputError
from imatch_s2ld.models import S2LD
from imatch_s2ld.synthetic import generate
from imatch_s2ld.synthetic.video_pairs import write_video_pairs


def test_demo_writes_the_whole_story(tmp_path):
    conf = DemoConfig(out=str(tmp_path / "demo"), size=(160, 120), frames=12, source_frames=10,
                      eval_gaps=(2, 4), steps=1, baselines=("orb",), progress=False, color=True,
                      finetune_overrides=(("preflight.windows", 2), ("probe_windows", 2), ("eval.viz", 1),
                                          ("model.min_points", 20), ("window.spacing", [2])))
    report = run(conf)
    out = tmp_path / "demo"
    assert json.loads((out / "report.json").read_text()) == json.loads(json.dumps(report))
    target, source = report["results"]["target"], report["results"]["source"]
    assert set(target) == {"orb", "s2ld (shipped)", "s2ld (fine-tuned)"}
    assert set(source) == {"s2ld (shipped)", "s2ld (fine-tuned)"}
    assert target["orb"]["num_pairs"] == target["s2ld (fine-tuned)"]["num_pairs"] > 0
    assert set(report["relative_gain_percent"]["target"]) == {"auc@5", "auc@10", "auc@20"}
    assert report["finetune"]["steps"] == 1
    for name in ("report.md", "finetune/report.md", "finetune/training.png", "finetune/model.pt"):
        assert (out / name).is_file(), name
    text = (out / "report.md").read_text()
    assert "| s2ld (fine-tuned) |" in text and "held-out video" in text
    assert report["self_check"]["after"]["num_pairs"] > 0 and "Label-free self-check" in text
    assert report["track_check"]["common"]["observations"] > 0 and "output tracks at the sift BA" in text
    assert report["color"] and "reading colour" in text  # --color: shipped and fine-tuned S2LD read RGB
    assert S2LD.from_checkpoint(out / "finetune" / "model.pt").in_channels == 3


def test_demo_bad_baseline_is_one_line_error(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "d"), "--baselines", "nope", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("imatch demo: error:") and "nope" in err and "\n" not in err
    assert not (tmp_path / "d").exists()


def test_video_pairs_have_the_requested_gaps(tmp_path):
    generate("default", tmp_path / "syn", seed=0, progress=False, layouts=("facade",), num_scenes=1, views=0,
             video_frames=9, eval_views=0, size=(64, 48))
    scene = tmp_path / "syn" / "video" / "facade_0000"
    path = write_video_pairs(scene, tmp_path / "pairs.txt", gaps=(2, 4), every=2)
    pairs = read_pairs_file(path, scene / "frames")
    got = sorted((int(p.name0[:6]), int(p.name1[:6])) for p in pairs)
    assert got == [(0, 2), (0, 4), (2, 4), (2, 6), (4, 6), (4, 8), (6, 8)]
    assert all(p.path0.is_file() for p in pairs)
    with pytest.raises(InputError, match="no frame pair"):
        write_video_pairs(scene, tmp_path / "none.txt", gaps=(50,))
    with pytest.raises(InputError, match="not a generated video scene"):
        write_video_pairs(tmp_path, tmp_path / "x.txt")


def test_demo_target_domain_option(capsys):
    assert main(["--target", "target-rain", "--no-progress"]) == 2  # argparse choices: one line, exit 2
    err = capsys.readouterr().err.strip()
    assert "--target" in err and "target-night" in err and "\n" not in err
