"""S2LD through the matcher registry and the evaluation CLI (random tiny weights: plumbing only)."""

from __future__ import annotations

import json

import pytest
import torch

import imatch_s2ld
from imatch_s2ld.errors import InputError
from imatch_s2ld.eval.cli import main as evaluate_main
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


def test_missing_default_checkpoint_is_a_clear_error(monkeypatch, tmp_path):
    import imatch_s2ld.models.s2ld as s2ld_module

    monkeypatch.setattr(s2ld_module, "DEFAULT_CHECKPOINT", tmp_path / "none.pt")
    with pytest.raises(InputError, match="none.pt.*s2ld:PATH"):
        imatch_s2ld.load_matcher("s2ld")
