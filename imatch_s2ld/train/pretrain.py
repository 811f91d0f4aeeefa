"""Supervised pretraining of S2LD on MegaDepth-layout data (real MegaDepth or generated scenes).

Command line (any launcher: plain python, ``accelerate launch``, ``torchrun``)::

    accelerate launch scripts/pretrain.py --config configs/pretrain_tiny.yaml [--cpu] [--resume] \\
        [key.sub=value ...]
    python scripts/pretrain.py --config configs/pretrain_tiny.yaml --cpu train.max_steps=50
    torchrun --nproc_per_node 2 scripts/pretrain.py --config configs/pretrain_tiny.yaml --cpu

Python: ``main({"run_dir": "...", "train": {"max_steps": 10}})`` -> :class:`TrainResult` (a
partial dict is merged strictly into :func:`default_conf`).

This module is the S2LD-specific glue around the generic :class:`~.trainer.Trainer`:

- **model** (``model.*``): a registered family (``s2ld``: ``S2LD.from_config(model.config,
  **model.overrides)``) or an import path ``"package.module:factory"`` called with the ``model``
  section; ``model.init`` optionally loads weights (any ``{"state_dict"}`` checkpoint).
- **data** (``data.*``): ``data.train.index`` (a folder of ``scene_info`` ``.npz``, a list file,
  or one ``.npz``; see :func:`imatch_s2ld.data.scene_info.scene_index_files`) + ``data.train.root``
  (image root; ``depth_root`` defaults to it) -> one
  :class:`~imatch_s2ld.data.megadepth_train.MegaDepthPairDataset` per scene, sampled
  scene-balanced (``n_samples_per_scene`` per scene and epoch) by
  :class:`~imatch_s2ld.data.sampling.SceneBalancedSampler`, sharded by rank. When
  ``data.train.index`` is null (the default) the training set is the synthetic generator's output
  ``data.synthetic.out`` (``scene_info/`` + images under it); if that folder does not hold a
  complete generated dataset yet, it is generated first (``imatch_s2ld.synthetic.generate`` with
  ``preset``, ``seed``, ``overrides``) by the local main process into a temporary folder renamed
  into place, while the other processes wait. An existing folder generated with another
  configuration is refused (delete it or change ``data.synthetic.out``).
- **validation** (``val.*``): :class:`~.validate.Validator` (held-out synthetic pairs by default,
  MegaDepth-1500 when ``val.megadepth1500.root`` is set).

Run directory ``run_dir``: ``config.yaml`` (resolved configuration), ``tensorboard/``,
``train_log.jsonl``, ``val.jsonl``, ``val/<set>/``, ``checkpoints/last.pt`` (training state,
see :mod:`.checkpoint`; also an S2LD checkpoint: ``S2LD.from_checkpoint`` reads it), ``model.pt``
(weights + conf + ``run_config`` + ``step``; ``--matcher s2ld:<run_dir>/model.pt`` evaluates it).
A run directory that already holds ``checkpoints/last.pt`` is refused unless ``--resume`` (continue
it) or ``train.overwrite=true`` (start over). Multi-node runs need ``run_dir`` on a shared
filesystem to resume (rank 0 writes the checkpoint, every rank reads it).

Exit codes of :func:`cli`: 0 done; 2 bad input (``error: ...``, one line: missing config, unknown
key, missing data, corrupt image/depth hit during training, bad checkpoint); 130 Ctrl-C (after
saving ``checkpoints/last.pt``), 143 SIGTERM (same).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import os
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, set_seed
from torch import nn

from ..cli import ArgumentParser, run_command
from ..data.megadepth_train import MegaDepthTrainConfig, build_megadepth_dataset
from ..data.sampling import SceneBalancedSampler
from ..errors import InputError, first_line
from ..io import read_torch_file
from .checkpoint import CHECKPOINT_DIR, LAST
from .config import build_config, save_config
from .trainer import (
    TRAIN_DEFAULTS,
    Trainer,
    TrainingInterrupted,
    TrainResult,
    check_train_conf,
    create_accelerator,
)
from .validate import METRICS, VAL_DEFAULTS, Validator

logger = logging.getLogger(__name__)


def _dataset_defaults() -> dict[str, Any]:
    return {f.name: f.default for f in dataclasses.fields(MegaDepthTrainConfig)}


def default_conf() -> dict[str, Any]:
    """The full default configuration (every key a YAML file or override may set)."""
    return {
        "run_dir": "outputs/pretrain/run",
        "model": {"name": "s2ld", "config": "tiny", "overrides": None, "init": None},
        "data": {
            "synthetic": {
                "preset": "default",
                "seed": 0,
                "out": "datasets/synthetic/pretrain_default",
                "overrides": None,
                "workers": 2,
            },
            "train": {
                "index": None,
                "root": None,
                "depth_root": None,
                "dataset": _dataset_defaults(),
                "n_samples_per_scene": 100,
                "batch_size": 2,
                "num_workers": 2,
                "check_files": False,
            },
        },
        "train": dict(TRAIN_DEFAULTS),
        "val": json.loads(json.dumps(VAL_DEFAULTS)),
    }


# ------------------------------------------------------------------------------------ model
def _build_s2ld(conf: Mapping[str, Any]) -> nn.Module:
    from ..models import S2LD

    overrides = conf["overrides"] or {}
    if not isinstance(overrides, Mapping):
        raise InputError(f"model.overrides: expected a mapping, got {overrides!r}")
    return S2LD.from_config(conf["config"], **overrides)


#: Model families by name: ``factory(model_section) -> nn.Module``.
MODELS: dict[str, Callable[[Mapping[str, Any]], nn.Module]] = {"s2ld": _build_s2ld}


def register_model(name: str, factory: Callable[[Mapping[str, Any]], nn.Module],
                   overwrite: bool = False) -> None:
    """Make ``model.name: <name>`` build ``factory(model_section)``."""
    if name in MODELS and not overwrite:
        raise ValueError(f"model {name!r} is already registered")
    MODELS[name] = factory


def build_model(conf: Mapping[str, Any]) -> nn.Module:
    """Build the ``model`` section; check the training contract; load ``init`` weights.

    Raises:
        InputError: unknown model name/import path, a model without ``batch_inputs``/``loss``,
            a bad config, or an unreadable/incompatible ``init`` file.
    """
    name = str(conf["name"])
    if name in MODELS:
        factory = MODELS[name]
    elif ":" in name:
        module, _, attr = name.partition(":")
        try:
            factory = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as err:
            raise InputError(f"model.name: cannot import {name!r} ({err})") from None
    else:
        raise InputError(f"model.name: unknown model {name!r}; known: {', '.join(sorted(MODELS))} "
                         "or an import path package.module:factory")
    model = factory(conf)
    missing = [m for m in ("batch_inputs", "loss") if not callable(getattr(model, m, None))]
    if missing:
        raise InputError(f"model.name: {name!r} cannot be trained: it lacks {', '.join(missing)}()")
    if conf["init"] is not None:
        path = Path(conf["init"])
        ckpt = read_torch_file(path, "model.init checkpoint")
        try:
            model.load_state_dict(ckpt["state_dict"] if "state_dict" in ckpt else ckpt)
        except (RuntimeError, ValueError, KeyError, TypeError) as err:
            raise InputError(f"{path}: cannot load model.init weights ({first_line(err)})") from None
    return model


# ------------------------------------------------------------------------------------- data
def _synthetic_meta(conf: Mapping[str, Any]) -> dict[str, Any]:
    from ..synthetic import resolve_config

    overrides = conf["overrides"] or {}
    if not isinstance(overrides, Mapping):
        raise InputError(f"data.synthetic.overrides: expected a mapping, got {overrides!r}")
    try:
        cfg = resolve_config(conf["preset"], **overrides)
    except InputError as err:
        raise InputError(f"data.synthetic: {err}") from None
    return json.loads(json.dumps({"seed": int(conf["seed"]), "config": asdict(cfg)}))


def prepare_synthetic(conf: Mapping[str, Any], accelerator: Accelerator, progress: bool = True) -> Path:
    """Return ``conf["out"]``, generating it first if it holds no complete generated dataset.

    The local main process renders into ``<out>.tmp-<pid>`` and renames it to ``out`` (a crash
    never leaves a half dataset under the final name); the other processes wait.

    Raises:
        InputError: bad generator config, ``out`` is a non-empty folder that is not a complete
            generated dataset, or it was generated with another configuration.
    """
    from ..synthetic import generate

    out = Path(conf["out"])
    meta_file = out / "synthetic_config.json"
    wanted = _synthetic_meta(conf)
    if accelerator.is_local_main_process and not meta_file.is_file():
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise InputError(f"{out}: data.synthetic.out exists but is not a complete generated dataset "
                             "(no synthetic_config.json); delete it or choose another folder")
        tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
        logger.info("generating synthetic training data (preset %s, seed %s) into %s",
                    conf["preset"], conf["seed"], out)
        try:
            generate(conf["preset"], tmp, seed=int(conf["seed"]), progress=progress,
                     workers=int(conf["workers"]), **(conf["overrides"] or {}))
            try:
                os.replace(tmp, out)
            except OSError:
                if not meta_file.is_file():  # not another node's finished copy
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    if not meta_file.is_file():
        raise InputError(f"{out}: no generated dataset (missing synthetic_config.json)")
    try:
        stored = json.loads(meta_file.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"{meta_file}: cannot read ({err})") from None
    have = {"seed": stored.get("seed"), "config": stored.get("config")}
    if have != wanted:
        diff = sorted(k for k in set(wanted["config"]) | set(have["config"] or {})
                      if (have["config"] or {}).get(k) != wanted["config"].get(k))
        if have["seed"] != wanted["seed"]:
            diff.insert(0, "seed")
        raise InputError(f"{out}: holds synthetic data generated with another configuration "
                         f"(differs in {', '.join(diff)}); delete it or set data.synthetic.out elsewhere")
    return out


def build_train_set(conf: Mapping[str, Any], synthetic_root: Path | None, accelerator: Accelerator,
                    seed: int) -> tuple[torch.utils.data.ConcatDataset, SceneBalancedSampler]:
    """The concatenated scenes of ``data.train`` and this rank's scene-balanced sampler."""
    index = conf["index"] if conf["index"] is not None else synthetic_root / "scene_info"  # type: ignore[operator]
    root = conf["root"] if conf["root"] is not None else (synthetic_root if conf["index"] is None else None)
    if root is None:
        raise InputError("data.train.root: the image root is required with data.train.index")
    if not Path(root).is_dir():
        raise InputError(f"{root}: data.train.root not found")
    if isinstance(index, list):
        index = [str(p) for p in index]
    dataset = build_megadepth_dataset(index, root, conf["dataset"], depth_root=conf["depth_root"],
                                      check_files=bool(conf["check_files"]))
    try:
        sampler = SceneBalancedSampler.from_concat(
            dataset, int(conf["n_samples_per_scene"]), seed=seed,
            num_replicas=accelerator.num_processes, rank=accelerator.process_index)
    except ValueError as err:
        raise InputError(f"data.train: {err}") from None
    if int(conf["batch_size"]) < 1 or int(conf["num_workers"]) < 0:
        raise InputError("data.train: batch_size must be >= 1 and num_workers >= 0")
    return dataset, sampler


# ------------------------------------------------------------------------------------- main
def main(conf: Mapping[str, Any] | None = None) -> TrainResult:
    """Pretrain with ``conf`` (merged strictly into :func:`default_conf`); see the module doc.

    Raises:
        InputError: bad configuration or data (one line naming the key or file).
        TrainingInterrupted: Ctrl-C/SIGTERM; ``checkpoints/last.pt`` was saved.
    """
    conf = build_config(default_conf(), overrides=dict(conf or {}))
    tconf = conf["train"]
    check_train_conf(tconf)
    best = tconf["best_metric"]
    metrics = [f"{name}/{m}" for name in ("synthetic", "megadepth1500") for m in METRICS]
    if best not in (None, "auto") and best not in metrics:
        raise InputError(f"train.best_metric: expected auto, null or one of {', '.join(metrics)}, "
                         f"got {best!r}")
    run_dir = Path(conf["run_dir"])
    last = run_dir / CHECKPOINT_DIR / LAST
    if tconf["resume"] and not last.is_file():
        raise InputError(f"{last}: no checkpoint to resume from")
    if not tconf["resume"] and last.is_file() and not tconf["overwrite"]:
        raise InputError(f"{run_dir}: already holds a run ({last}); pass --resume to continue it, "
                         "train.overwrite=true to start over, or another run_dir")
    accelerator = create_accelerator(tconf, run_dir)
    try:
        # the model first: a bad model option is refused before anything is written
        set_seed(int(tconf["seed"]))  # identical initial weights on every rank
        model = build_model(conf["model"])
        if accelerator.is_main_process:
            run_dir.mkdir(parents=True, exist_ok=True)
            if tconf["overwrite"] and not tconf["resume"]:
                for name in ("train_log.jsonl", "val.jsonl"):
                    (run_dir / name).unlink(missing_ok=True)
            save_config(conf, run_dir / "config.yaml")
        accelerator.wait_for_everyone()
        logger.info("run %s: %d process(es), device %s, mixed precision %s", run_dir,
                    accelerator.num_processes, accelerator.device, accelerator.mixed_precision)

        dconf, vconf = conf["data"], conf["val"]
        needs_synthetic = dconf["train"]["index"] is None or (
            vconf["synthetic"]["enabled"] and vconf["synthetic"]["data"] is None)
        synthetic_root = (prepare_synthetic(dconf["synthetic"], accelerator, progress=bool(tconf["progress"]))
                          if needs_synthetic else None)
        dataset, sampler = build_train_set(dconf["train"], synthetic_root, accelerator, int(tconf["seed"]))
        logger.info("training set: %d pairs in %d scenes, %d samples per epoch and rank",
                    len(dataset), len(dataset.datasets), len(sampler))

        validator = Validator(vconf, run_dir, synthetic_root, check=accelerator.is_main_process)
        flag = [bool(validator)]
        if accelerator.num_processes > 1:
            broadcast_object_list(flag)
        trainer = Trainer(tconf, run_dir, accelerator)
        return trainer.fit(
            model, dataset, sampler, batch_size=int(dconf["train"]["batch_size"]),
            num_workers=int(dconf["train"]["num_workers"]), validate=validator if flag[0] else None,
            val_every=int(vconf["every_n_steps"] or 0), val_at_end=bool(vconf["at_end"]), run_config=conf,
        )
    finally:
        accelerator.end_training()


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="pretrain.py",
        description="Supervised pretraining of S2LD (accelerate: CPU, one or many GPUs/nodes).",
        epilog="Overrides are dotted keys with YAML values, e.g. train.lr=1e-4 model.config=base "
               "data.train.batch_size=8 val.megadepth1500.root=/data/megadepth",
    )
    p.add_argument("--config", required=True, help="YAML config (e.g. configs/pretrain_tiny.yaml)")
    p.add_argument("--cpu", action="store_true", help="train on the CPU (train.cpu=true)")
    p.add_argument("--resume", action="store_true",
                   help="continue <run_dir>/checkpoints/last.pt (train.resume=true)")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")
    return p


def cli(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code (see the module docstring)."""
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    return run_command("pretrain", build_parser(), argv, lambda args: _run(args, rank), intermixed=True)


def _run(args: argparse.Namespace, rank: int) -> int:
    overrides = list(args.overrides)
    overrides += ["train.cpu=true"] if args.cpu else []
    overrides += ["train.resume=true"] if args.resume else []
    try:
        result = main(build_config(default_conf(), args.config, overrides))
    except TrainingInterrupted as err:
        print(f"pretrain: {err}", file=sys.stderr, flush=True)
        return err.exit_code
    except KeyboardInterrupt:
        print("pretrain: interrupted (nothing saved)", file=sys.stderr, flush=True)
        return 130
    if rank == 0 and not result.finished:
        print(f"stopped at step {result.step}: checkpoint {result.checkpoint} (continue with --resume)")
    elif rank == 0:
        print(f"done: {result.step} steps; checkpoint {result.checkpoint}; model {result.model_path}")
        if result.validation:
            last = result.validation[-1]
            print("validation: " + ", ".join(f"{k} {v:.2f}" for k, v in last.items()
                                            if k.endswith(("auc@5", "auc@10", "auc@20"))))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
