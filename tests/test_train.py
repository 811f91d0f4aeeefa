"""Supervised pretraining: strict configs, CPU runs, checkpoints, exact resume, Ctrl-C, bf16, bad data.

One tiny synthetic dataset is generated per module (1 scene, 160x120, held-out eval views) and
every run trains the tiny S2LD at 128 px for a few steps on one CPU thread.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from imatch_s2ld.errors import InputError
from imatch_s2ld.train import build_config, build_model, cli, default_conf, main, register_model
from imatch_s2ld.train.pretrain import MODELS
from imatch_s2ld.train.trainer import Trainer, TrainingInterrupted, lr_factor

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "pretrain_smoke.yaml"
SYN = {"num_scenes": 1, "views": 5, "size": [160, 120], "video_frames": 2, "eval_views": 4,
       "texture_density": 0.3}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: fast and stable on 2 shared cores (no OpenMP oversubscription)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def syn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from imatch_s2ld.synthetic import generate

    root = tmp_path_factory.mktemp("pretrain") / "syn"
    generate("default", root, seed=0, progress=False, **SYN)
    return root


def _conf(run_dir: Path, syn: Path, **train) -> dict:
    """A partial config: smoke settings, the module's dataset, no progress bar."""
    return {
        "run_dir": str(run_dir),
        "data": {"synthetic": {"out": str(syn), "overrides": SYN},
                 "train": {"dataset": {"img_resize": 128, "min_overlap": 0.0, "augment": {}},
                           "n_samples_per_scene": 6, "batch_size": 2, "num_workers": 0}},
        "train": {"cpu": True, "max_steps": 3, "warmup_steps": 1, "log_every": 1, "save_every": 0,
                  "progress": False, **train},
        "val": {"every_n_steps": 0, "at_end": False},
    }


def _args(run_dir: Path, syn: Path, *extra: str) -> list[str]:
    return ["--config", str(SMOKE), "--cpu", f"run_dir={run_dir}", f"data.synthetic.out={syn}",
            "train.progress=false", *extra]


# ------------------------------------------------------------------------------------ config
def test_config_overrides_and_strictness(tmp_path: Path) -> None:
    conf = build_config(default_conf(), SMOKE, ["train.lr=1e-4", "model.config=base",
                                                "data.synthetic.overrides={views: 7}", "train.grad_clip=0"])
    assert conf["train"]["lr"] == pytest.approx(1e-4) and conf["model"]["config"] == "base"
    assert conf["data"]["synthetic"]["overrides"] == {**SYN, "views": 7}  # YAML and CLI deep-merge
    assert conf["data"]["train"]["dataset"]["img_resize"] == 128  # from the YAML
    assert conf["train"]["max_steps"] == 3 and conf["train"]["weight_decay"] == 0.01  # YAML / default
    for name in ("pretrain_tiny", "pretrain_base", "pretrain_smoke"):
        build_config(default_conf(), REPO / "configs" / f"{name}.yaml")

    with pytest.raises(InputError, match=r"unknown configuration key 'train\.lrr'"):
        build_config(default_conf(), SMOKE, ["train.lrr=1"])
    with pytest.raises(InputError, match=r"'data\.train\.dataset\.img_rsize'"):
        build_config(default_conf(), None, {"data": {"train": {"dataset": {"img_rsize": 64}}}})
    with pytest.raises(InputError, match=r"'train\.max_steps': expected an integer"):
        build_config(default_conf(), SMOKE, ["train.max_steps=abc"])
    with pytest.raises(InputError, match="expected key.sub=value"):
        build_config(default_conf(), SMOKE, ["train.lr"])
    typo = tmp_path / "typo.yaml"
    typo.write_text("train:\n  max_step: 3\n")
    with pytest.raises(InputError, match=r"typo\.yaml: unknown configuration key 'train\.max_step'"):
        build_config(default_conf(), typo)
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(InputError, match=r"bad\.yaml: cannot parse config"):
        build_config(default_conf(), bad)
    with pytest.raises(InputError, match="config file not found"):
        build_config(default_conf(), tmp_path / "missing.yaml")
    with pytest.raises(InputError, match="train.scheduler"):
        main({"run_dir": str(tmp_path / "r"), "train": {"scheduler": "linear"}})
    with pytest.raises(InputError, match="train.best_metric: .*synthetic/auc@5.*'synthetic/auc10'"):
        main({"run_dir": str(tmp_path / "r"), "train": {"best_metric": "synthetic/auc10"}})
    assert not (tmp_path / "r").exists()  # refused before anything is written

    cos = {"warmup_steps": 4, "scheduler": "cosine", "max_steps": 10, "min_lr_ratio": 0.1}
    assert lr_factor(0, cos) == 0.25
    cos["warmup_steps"] = 0
    assert lr_factor(0, cos) == pytest.approx(1.0) and lr_factor(10, cos) == pytest.approx(0.1)
    step = {"warmup_steps": 0, "scheduler": "step", "step_size": 3, "gamma": 0.5}
    assert [lr_factor(s, step) for s in (0, 2, 3, 6)] == [1.0, 1.0, 0.5, 0.25]


def test_cli_config_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["--config", str(tmp_path / "nope.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pretrain: error:") and "nope.yaml: config file not found" in err
    assert "\n" not in err
    assert cli(["--config", str(SMOKE), "train.lrr=1"]) == 2
    assert "unknown configuration key 'train.lrr'" in capsys.readouterr().err
    assert cli(["--config", str(SMOKE), "--resume", f"run_dir={tmp_path / 'none'}"]) == 2
    assert "no checkpoint to resume from" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ runs
def test_cpu_run_writes_everything(tmp_path: Path, syn: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    import imatch_s2ld
    from imatch_s2ld.models import S2LD

    run = tmp_path / "run"
    assert cli(_args(run, syn)) == 0  # smoke: 3 steps, checkpoint at 2, validation at 2 and 3
    out = capsys.readouterr().out
    assert "done: 3 steps" in out and "validation: synthetic/auc@5" in out

    conf = (run / "config.yaml").read_text()
    assert "max_steps: 3" in conf and str(syn) in conf
    ckpt = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    tr = ckpt["training"]
    assert tr["step"] == 3 and tr["num_processes"] == 1 and tr["scaler"] is None
    assert tr["sampler"]["num_replicas"] == 1 and tr["sampler"]["num_consumed"] > 0
    assert len(tr["rng"]) == 1 and isinstance(tr["rng"][0]["numpy"][1], torch.Tensor)
    assert ckpt["run_config"]["train"]["max_steps"] == 3 and ckpt["conf"]["d_model"] == 64
    assert set(tr["optimizer"]) == {"state", "param_groups"}

    model = S2LD.from_checkpoint(run / "checkpoints" / "last.pt")  # the checkpoint alone rebuilds it
    weights = torch.load(run / "model.pt", weights_only=True)
    assert weights["step"] == 3 and weights["run_config"]["model"]["config"] == "tiny"
    for k, v in S2LD.from_checkpoint(run / "model.pt").state_dict().items():
        torch.testing.assert_close(v, model.state_dict()[k])
    init = build_model({"name": "s2ld", "config": "tiny", "overrides": None, "init": str(run / "model.pt")})
    torch.testing.assert_close(init.state_dict(), model.state_dict())  # model.init starts from it
    matcher = imatch_s2ld.load_matcher(f"s2ld:{run / 'model.pt'}")
    image = np.zeros((64, 80), np.uint8)
    k0, k1, c = matcher.match(image, image)
    assert k0.shape[1] == 2 and len(k0) == len(k1) == len(c)

    rows = [r for r in (run / "val.jsonl").read_text().splitlines() if r]
    assert len(rows) == 2 and '"step": 2' in rows[0] and '"synthetic/auc@5"' in rows[1]
    assert (run / "val" / "synthetic" / "summary.json").is_file()
    vals = [json.loads(r) for r in rows]
    top = max(vals, key=lambda r: r["synthetic/auc@10"])  # the first of equal values
    best = torch.load(run / "best.pt", weights_only=True)
    assert best["best_metric"] == "synthetic/auc@10" and best["step"] == top["step"]
    assert best["best_value"] == pytest.approx(top["synthetic/auc@10"])
    S2LD.from_checkpoint(run / "best.pt")  # a model checkpoint like model.pt
    assert len((run / "train_log.jsonl").read_text().splitlines()) == 3

    events = sorted((run / "tensorboard").glob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(events[0].parent)).Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/pairs_per_s", "val/synthetic/auc@5"} <= tags
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2, 3]

    assert cli(_args(run, syn)) == 2  # the run dir already holds a run
    assert "--resume" in capsys.readouterr().err


def test_resume_gives_identical_next_steps(tmp_path: Path, syn: Path) -> None:
    straight = main(_conf(tmp_path / "a", syn, max_steps=4))
    first = main(_conf(tmp_path / "b", syn, max_steps=4, stop_after_steps=2))
    assert not first.finished and first.step == 2 and first.model_path is None
    log = tmp_path / "b" / "train_log.jsonl"
    with open(log, "a") as f:  # a run killed after logging step 3 but before its next checkpoint
        f.write(json.dumps({"step": 3, "loss": -1.0}) + "\n")
    resumed = main(_conf(tmp_path / "b", syn, max_steps=4, resume=True))
    assert resumed.finished and resumed.step == 4
    losses = [h["loss"] for h in straight.history]
    assert [h["step"] for h in resumed.history] == [1, 2, 3, 4]  # the whole run, step 3 once
    assert [json.loads(r)["step"] for r in log.read_text().splitlines()] == [1, 2, 3, 4]
    assert [h["loss"] for h in first.history] == pytest.approx(losses[:2], rel=1e-6)
    assert [h["loss"] for h in resumed.history] == pytest.approx(losses, rel=1e-6)
    assert [h["lr"] for h in resumed.history] == pytest.approx([h["lr"] for h in straight.history])
    for k, v in torch.load(tmp_path / "a" / "model.pt", weights_only=True)["state_dict"].items():
        torch.testing.assert_close(v, torch.load(tmp_path / "b" / "model.pt", weights_only=True)
                                   ["state_dict"][k])


def _ctrl_c_after(monkeypatch: pytest.MonkeyPatch, at_step: int) -> None:
    """A real SIGINT (Ctrl-C) sent by the trainer to itself after step ``at_step``."""
    def step_done(self: Trainer, step: int) -> None:
        if step == at_step:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(Trainer, "_step_done", step_done)


def test_ctrl_c_saves_and_exits_130(tmp_path: Path, syn: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    args = _args(run, syn, "val.every_n_steps=0", "val.at_end=false")
    _ctrl_c_after(monkeypatch, 1)
    assert cli(args) == 130
    err = capsys.readouterr().err
    assert f"interrupted at step 1: saved {run / 'checkpoints' / 'last.pt'}" in err and "Traceback" not in err
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["training"]["step"] == 1
    assert not (run / "model.pt").exists()
    monkeypatch.undo()
    assert cli([*args, "--resume"]) == 0
    assert "done: 3 steps" in capsys.readouterr().out

    _ctrl_c_after(monkeypatch, 2)
    with pytest.raises(TrainingInterrupted) as info:  # the Python API raises instead
        main(_conf(tmp_path / "api", syn))
    assert info.value.exit_code == 130 and info.value.step == 2 and info.value.checkpoint.is_file()


def test_bf16_autocast_on_cpu(tmp_path: Path, syn: Path) -> None:
    result = main(_conf(tmp_path / "bf16", syn, max_steps=2, mixed_precision="bf16"))
    assert len(result.history) == 2
    assert all(math.isfinite(h["loss"]) and math.isfinite(h["grad_norm"]) for h in result.history)
    ckpt = torch.load(tmp_path / "bf16" / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["training"]["mixed_precision"] == "bf16"
    assert all(v.dtype == torch.float32 for v in ckpt["state_dict"].values() if v.is_floating_point())


# ------------------------------------------------------------------------------ bad data
@pytest.mark.parametrize("case", ["missing_depth", "corrupt_image", "malformed_index"])
def test_bad_data_names_the_file(case: str, tmp_path: Path, syn: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    shutil.copytree(syn / "scene_info", data / "scene_info")
    shutil.copytree(syn / "Undistorted_SfM", data / "Undistorted_SfM")
    scene = next((data / "Undistorted_SfM").iterdir())
    workers = "0"
    if case == "missing_depth":
        victims = sorted((scene / "depths").glob("*.h5"))
        for f in victims:
            f.unlink()
    elif case == "corrupt_image":
        victims = sorted((scene / "images").glob("*.jpg"))
        for f in victims:
            f.write_bytes(b"not a jpeg")
        workers = "1"  # the error crosses the worker boundary as one line
    else:
        victims = sorted((data / "scene_info").glob("*.npz"))
        victims[0].write_bytes(b"garbage")
    args = _args(tmp_path / "run", syn, f"data.train.index={data / 'scene_info'}",
                 f"data.train.root={data}", f"data.train.num_workers={workers}",
                 "val.synthetic.enabled=false")
    assert cli(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pretrain: error:") and "\n" not in err and "Traceback" not in err
    assert any(str(f) in err for f in victims), err


# ------------------------------------------------------------------------- generic trainer
@dataclass
class _Losses:
    total: torch.Tensor
    terms: dict


class _Tiny(nn.Module):
    """Not S2LD: the trainer only needs batch_inputs / forward / loss."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def batch_inputs(self, batch: dict) -> dict:
        return {"image": batch["image0"]}

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.conv(image)

    def loss(self, pred: torch.Tensor, batch: dict) -> _Losses:
        total = ((pred - batch["image1"]) ** 2).mean()
        return _Losses(total, {"mse": total.detach()})


def test_generic_trainer_any_model_and_workers(tmp_path: Path, syn: Path) -> None:
    register_model("tiny-test", lambda conf: _Tiny())
    try:
        conf = _conf(tmp_path / "run", syn, max_steps=3, record_indices=True)
        conf["model"] = {"name": "tiny-test"}
        conf["data"]["train"]["num_workers"] = 2
        result = main(conf)
        assert result.finished and [h["step"] for h in result.history] == [1, 2, 3]
        assert all("mse" in h for h in result.history)
        lines = (tmp_path / "run" / "indices_rank0.txt").read_text().splitlines()
        assert [line.split()[0] for line in lines] == ["1", "2", "3"]
        ckpt = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
        assert set(ckpt["state_dict"]) == {"conv.weight", "conv.bias"} and ckpt["step"] == 3

        # Data randomness does not depend on the number of workers.
        conf["run_dir"] = str(tmp_path / "run0")
        conf["data"]["train"]["num_workers"] = 0
        again = main(conf)
        assert [h["loss"] for h in again.history] == pytest.approx([h["loss"] for h in result.history])

        conf["run_dir"] = str(tmp_path / "accum")  # gradient accumulation: 2 micro-batches per step
        conf["train"].update(grad_accum=2, max_steps=2)
        accum = main(conf)
        lines = (tmp_path / "accum" / "indices_rank0.txt").read_text().splitlines()
        assert [line.split()[0] for line in lines] == ["1", "1", "2", "2"] and accum.step == 2
    finally:
        MODELS.pop("tiny-test", None)
    with pytest.raises(InputError, match="unknown model 'nope'"):
        main({**_conf(tmp_path / "x", syn), "model": {"name": "nope"}})
    assert not (tmp_path / "x").exists()  # refused before anything is written
    bad = _conf(tmp_path / "y", syn)
    bad["model"] = {"overrides": {"loss": {"fine_loss": "nope"}}}
    with pytest.raises(InputError, match="fine_loss"):
        main(bad)
    assert not (tmp_path / "y").exists()
