"""S2LD through the matcher registry and the evaluation CLI (random tiny weights: plumbing), and the
shipped default checkpoint: small, loads without the wheel's files, matches a rendered pair on its true
epipolar lines."""

from __future__ import annotations

import json

import pytest
import torch

import imatch_s2ld
from imatch_s2ld.data.images import read_image
from imatch_s2ld.data.pairs_file import read_pairs_file
from imatch_s2ld.errors import InputError
from imatch_s2ld.eval.cli import main as evaluate_main
from imatch_s2ld.geometry import essential_from_pose, fundamental_from_essential, sampson_distance
from imatch_s2ld.models import S2LD


def test_registry_loads_s2ld_checkpoint(tiny_checkpoint):
    matcher = imatch_s2ld.load_matcher(f"s2ld:{tiny_checkpoint}")
    assert matcher.name == "s2ld"
    with pytest.raises(InputError, match="nothing.pt"):
        imatch_s2ld.load_matcher("s2ld:/nonexistent/nothing.pt")


def test_evaluate_cli_with_s2ld(tiny_checkpoint, tmp_path):
    from imatch_s2ld.synthetic import generate

    data = generate("default", tmp_path / "data", seed=1, progress=False, num_scenes=1, views=4,
                    video_frames=0, eval_views=0)
    out = tmp_path / "eval"
    code = evaluate_main(["--dataset", "synthetic", "--data", str(data.root), "--matcher",
                          f"s2ld:{tiny_checkpoint}", "--max-pairs", "2", "--viz", "1", "--no-progress",
                          "--out", str(out)])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_pairs"] == 2 and summary["protocol"]["matcher"].startswith("s2ld:")


def test_default_checkpoint_is_shipped_small_and_loads():
    from imatch_s2ld.models.s2ld import DEFAULT_CHECKPOINT

    assert DEFAULT_CHECKPOINT.is_file(), "the default checkpoint must ship with the package"
    assert DEFAULT_CHECKPOINT.stat().st_size <= 25 * 2**20
    matcher = imatch_s2ld.load_matcher("s2ld")
    assert isinstance(matcher, S2LD) and not matcher.training
    ckpt = torch.load(DEFAULT_CHECKPOINT, map_location="cpu", weights_only=True)
    assert "run_config" in ckpt  # the resolved training configuration travels with the weights


def test_default_checkpoint_matches_a_rendered_pair_on_its_epipolar_lines(tmp_path):
    from imatch_s2ld.synthetic import generate
    from imatch_s2ld.synthetic.video_pairs import write_video_pairs

    generate("default", tmp_path / "syn", seed=2, progress=False, layouts=("facade",), num_scenes=1, views=0,
             video_frames=7, eval_views=0, size=(320, 240))
    scene = tmp_path / "syn" / "video" / "facade_0000"
    (pair,) = read_pairs_file(write_video_pairs(scene, tmp_path / "pairs.txt", gaps=(6,), every=8),
                              scene / "frames")
    matcher = imatch_s2ld.load_matcher("s2ld")
    k0, k1, conf = matcher.match(read_image(pair.path0), read_image(pair.path1))
    assert k0.shape == k1.shape == (len(conf), 2) and len(conf) >= 100
    F = fundamental_from_essential(essential_from_pose(torch.as_tensor(pair.T_0to1)),
                                   torch.as_tensor(pair.K0), torch.as_tensor(pair.K1))
    err = sampson_distance(*(torch.as_tensor(k, dtype=torch.float64) for k in (k0, k1)), F, squared=False)
    assert err.median() < 0.5 and (err < 2.0).double().mean() > 0.95, (len(conf), err.median())


def test_missing_default_checkpoint_is_a_clear_error(monkeypatch, tmp_path):
    import imatch_s2ld.models.s2ld as s2ld_module

    monkeypatch.setattr(s2ld_module, "DEFAULT_CHECKPOINT", tmp_path / "none.pt")
    with pytest.raises(InputError, match="none.pt.*s2ld:PATH"):
        imatch_s2ld.load_matcher("s2ld")
