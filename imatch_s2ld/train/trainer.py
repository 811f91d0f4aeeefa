"""A generic, resumable training loop on top of 🤗 accelerate (one CPU, one GPU, many GPUs/nodes).

The trainer knows nothing about the model it trains. The model contract:

- ``inputs = model.batch_inputs(batch)``: keyword arguments of ``forward`` (called on the
  unwrapped model);
- ``pred = model(**inputs)``: called through the accelerate-wrapped model (DDP syncs gradients,
  mixed precision autocasts);
- ``losses = model.loss(pred, batch)``: ``.total`` (0-d tensor to backpropagate) and ``.terms``
  (``dict[str, Tensor]`` of detached 0-d tensors, logged);
- optional ``model.conf`` (stored in checkpoints) and ``model.save_checkpoint(path, extra=...)``
  (writes ``<run_dir>/model.pt`` at the end; else a plain ``{"state_dict"}`` file is written).

The data contract: a map-style ``dataset`` and a resumable ``sampler`` that already shards by rank
(``set_epoch(e)``, ``state_dict(num_consumed)``, ``load_state_dict(state)``, ``len``), e.g.
:class:`imatch_s2ld.data.sampling.SceneBalancedSampler` built with ``num_replicas`` = world size
and ``rank`` = process index.

Decisions (see also :mod:`.checkpoint`):

- **The DataLoader is not passed through** ``accelerator.prepare``: the sampler already gives
  each rank its own disjoint slice of every epoch, and accelerate would shard it again (or replace
  it). Batches are moved to ``accelerator.device`` with ``send_to_device``.
- **The LR scheduler is not passed through** ``prepare`` either: accelerate's wrapper steps a
  scheduler ``num_processes`` times per optimizer step (it assumes a per-sample schedule), which
  would make the schedule depend on the world size. Here the schedule is a function of the
  optimizer step only: ``scheduler.step()`` once per optimizer step. Model and optimizer are
  prepared (DDP wrapping, device placement, mixed precision, gradient accumulation).
- **One step = one optimizer update** = ``grad_accum`` micro-batches per rank (via
  ``accelerator.accumulate``); ``max_steps``, ``log_every``, ``save_every`` count updates. The
  effective batch is ``batch_size x grad_accum x world size``.
- **Data randomness is a function of (seed, epoch, position in the epoch)**: each item is loaded
  under ``torch`` seeded with that triple (``torch.random.fork_rng``), so augmentation is the
  same whatever the number of workers, and a resumed run loads exactly the samples (and
  augmentations) an uninterrupted run would have. Datasets should draw their randomness from
  torch's global RNG (as :class:`~imatch_s2ld.data.megadepth_train.MegaDepthPairDataset` does).
  The DataLoader has a seeded generator; workers seed numpy/``random`` from torch's seed and
  ignore SIGINT (the main process handles Ctrl-C).
- **Ctrl-C / SIGTERM**: the first signal asks to stop; the step in progress finishes, all ranks
  agree (a tiny all-reduce per step when distributed), a checkpoint is saved, and
  :class:`TrainingInterrupted` is raised (exit code 130 for SIGINT, 143 for SIGTERM). A second
  Ctrl-C aborts at once without saving.
- A dataset :class:`~imatch_s2ld.errors.InputError` (missing/corrupt file) raised in a worker is
  carried to the main process as one line and re-raised there as ``InputError``.
- Non-finite gradients (all ranks see the same all-reduced norm) skip the update and are counted
  (``train/skipped_steps``; with fp16 the grad scaler skips it and lowers its scale); the LR
  schedule keeps following the step counter.
- Validation (a callable ``validate(model, step) -> {name: float}``) runs on the main process
  only, the model in eval mode and the RNG states untouched (saved and restored around it);
  other ranks wait. Results go to TensorBoard (``val/<name>``) and ``<run_dir>/val.jsonl``; the
  model of the best validation so far (``best_metric``) goes to ``<run_dir>/best.pt`` (its
  ``step``, ``best_metric`` and ``best_value`` stored with it; a resumed run keeps improving on it).

Outputs in ``run_dir``: ``tensorboard/`` (``train/loss``, ``train/<term>``, ``train/lr``,
``train/pairs_per_s``, ``train/grad_norm``, ``val/...``), ``train_log.jsonl`` (the logged rows;
a resumed run first drops the rows logged after its checkpoint, so each step appears once),
``val.jsonl`` (likewise), ``checkpoints/last.pt`` (every ``save_every`` steps, at the end, on interrupt),
``model.pt`` (at the end), ``best.pt`` (see validation), and with ``record_indices``
``indices_rank{r}.txt`` (dataset indices of every micro-batch per rank, for checking the sharding).
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import math
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import gather_object, send_to_device, set_seed
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate
from tqdm import tqdm

from ..errors import InputError
from ..io import read_torch_file
from .checkpoint import (
    CHECKPOINT_DIR,
    LAST,
    config_differences,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .config import flatten

logger = logging.getLogger(__name__)

#: Defaults of the ``train`` section (every key documented in ``configs/pretrain_tiny.yaml``).
TRAIN_DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "max_steps": 1000,
    "lr": 1e-3,
    "weight_decay": 0.01,
    "betas": [0.9, 0.999],
    "eps": 1e-8,
    "scheduler": "cosine",
    "warmup_steps": 100,
    "min_lr_ratio": 0.01,
    "step_size": 1000,
    "gamma": 0.5,
    "grad_clip": 1.0,
    "grad_accum": 1,
    "mixed_precision": "no",
    "cpu": False,
    "find_unused_parameters": True,
    "deterministic": False,
    "log_every": 10,
    "save_every": 500,
    "resume": False,
    "overwrite": False,
    "progress": True,
    "record_indices": False,
    "stop_after_steps": None,
    # a validation metric (higher is better) whose best value's model is kept in <run_dir>/best.pt;
    # "auto": the first "<set>/auc@10" if the validation gives one; None: off
    "best_metric": "auto",
}

SCHEDULERS = ("cosine", "step", "constant")
MIXED_PRECISION = ("no", "bf16", "fp16")


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped by a signal; ``checkpoint`` is the saved state (None: nothing saved)."""

    def __init__(self, message: str, exit_code: int, checkpoint: Path | None, step: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.checkpoint = checkpoint
        self.step = step


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` did: final step, files written, the logged rows (``history``,
    ``validation``: every row of the run, those before a resume included) and ``best``: the model in
    ``best.pt`` as ``{"metric", "step", "value", "path"}`` (None when none was kept)."""

    run_dir: Path
    step: int
    checkpoint: Path
    model_path: Path | None
    history: list[dict[str, float]] = field(default_factory=list)
    validation: list[dict[str, float]] = field(default_factory=list)
    num_processes: int = 1
    skipped_steps: int = 0
    finished: bool = True
    best: dict[str, Any] | None = None


# ---------------------------------------------------------------------------------------- data
class _ItemError:
    """A dataset InputError carried from a worker to the main process (picklable, one line)."""

    def __init__(self, message: str) -> None:
        self.message = message


def item_seed(seed: int, epoch: int, position: int) -> int:
    """Seed of the sample at ``position`` (global, across ranks) of ``epoch``."""
    return int(np.random.SeedSequence([int(seed), int(epoch), int(position)]).generate_state(1)[0])


class _SeededItems(Dataset):
    """Loads ``dataset[idx]`` for keys ``(epoch, position, idx)`` under a per-sample torch seed."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[int, Any]:
        epoch, position, idx = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(item_seed(self.seed, epoch, position))
            try:
                return idx, self.dataset[idx]
            except InputError as err:
                return idx, _ItemError(str(err))


class _PositionedSampler(Sampler):
    """Wraps the sharded sampler: yields ``(epoch, global position, index)``."""

    def __init__(self, sampler: Sampler, rank: int, world: int) -> None:
        self.sampler = sampler
        self.rank, self.world = int(rank), int(world)
        self.epoch = 0
        self.start = 0  # local position of the first yielded index (the resume offset)

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        epoch = self.epoch
        for k, idx in enumerate(self.sampler, start=self.start):
            yield epoch, k * self.world + self.rank, int(idx)

    def __len__(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]


def _collate(items: list[tuple[int, Any]], collate: Callable[[list[Any]], Any] = default_collate
             ) -> tuple[list[int], Any]:
    for _, item in items:
        if isinstance(item, _ItemError):
            return [], item
    return [idx for idx, _ in items], collate([item for _, item in items])


def _worker_init(worker_id: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process handles Ctrl-C
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


# ------------------------------------------------------------------------------ optimisation
def lr_factor(step: int, conf: Mapping[str, Any]) -> float:
    """LR multiplier after ``step`` optimizer steps: linear warmup, then cosine/step/constant."""
    warmup = int(conf["warmup_steps"])
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    kind = conf["scheduler"]
    if kind == "constant":
        return 1.0
    if kind == "step":
        return float(conf["gamma"]) ** ((step - warmup) // max(1, int(conf["step_size"])))
    span = max(1, int(conf["max_steps"]) - warmup)
    progress = min(1.0, (step - warmup) / span)
    floor = float(conf["min_lr_ratio"])
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(model: nn.Module, conf: Mapping[str, Any]) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and normalisation weights (parameters with ndim < 2)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": float(conf["weight_decay"])},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=float(conf["lr"]),
                             betas=tuple(float(b) for b in conf["betas"]), eps=float(conf["eps"]))


def check_train_conf(conf: Mapping[str, Any]) -> None:
    """Validate the values of the ``train`` section (types are checked by the config loader)."""
    def need(ok: bool, key: str, what: str) -> None:
        if not ok:
            raise InputError(f"train.{key}: expected {what}, got {conf[key]!r}")

    need(conf["scheduler"] in SCHEDULERS, "scheduler", f"one of {', '.join(SCHEDULERS)}")
    need(normalize_precision(conf["mixed_precision"]) in MIXED_PRECISION, "mixed_precision",
         "no, bf16 or fp16")
    need(conf["max_steps"] >= 1, "max_steps", "an integer >= 1")
    need(conf["grad_accum"] >= 1, "grad_accum", "an integer >= 1")
    need(conf["lr"] > 0, "lr", "a positive number")
    need(conf["warmup_steps"] >= 0, "warmup_steps", "an integer >= 0")
    need(conf["log_every"] >= 1, "log_every", "an integer >= 1")
    need(conf["save_every"] >= 0, "save_every", "an integer >= 0 (0: only at the end)")
    need(0.0 <= conf["min_lr_ratio"] <= 1.0, "min_lr_ratio", "a number in [0, 1]")
    need(conf["stop_after_steps"] is None or conf["stop_after_steps"] >= 1, "stop_after_steps",
         "null or an integer >= 1")
    need(conf["grad_clip"] is None or conf["grad_clip"] >= 0, "grad_clip", "null or a number >= 0")
    need(isinstance(conf["betas"], list) and len(conf["betas"]) == 2, "betas", "[beta1, beta2]")
    need(conf["best_metric"] is None or (isinstance(conf["best_metric"], str) and conf["best_metric"]),
         "best_metric", "auto, null or a validation metric name")


def normalize_precision(value: Any) -> str:
    """``no``/``false``/``null`` -> ``"no"`` (YAML reads a bare ``no`` as false); else lowercase."""
    if value is None or value is False:
        return "no"
    return str(value).lower()


# ----------------------------------------------------------------------------------- signals
class _StopRequest:
    """SIGINT/SIGTERM handler: the first signal sets ``signum``; a second Ctrl-C aborts at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        print(f"\n{signal.Signals(signum).name}: stopping after this step and saving a checkpoint "
              "(Ctrl-C again aborts without saving)", file=sys.stderr, flush=True)


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a block (validation) without changing python/numpy/torch(/CUDA) RNG states."""
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


# ----------------------------------------------------------------------------------- trainer
def create_accelerator(conf: Mapping[str, Any], run_dir: str | Path) -> Accelerator:
    """The :class:`Accelerator` for the ``train`` section (``cpu``, ``mixed_precision``,
    ``grad_accum``, TensorBoard logging into ``run_dir``).

    In a single, non-distributed process accelerate's singletons are reset first, so several runs
    with different settings can follow each other in one Python process (tests, notebooks).
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    ddp = DistributedDataParallelKwargs(find_unused_parameters=bool(conf["find_unused_parameters"]))
    try:
        return Accelerator(
            cpu=bool(conf["cpu"]),
            mixed_precision=normalize_precision(conf["mixed_precision"]),
            gradient_accumulation_steps=int(conf["grad_accum"]),
            log_with="tensorboard",
            project_dir=str(run_dir),
            kwargs_handlers=[ddp],
        )
    except ValueError as err:  # e.g. fp16 requested where it is unsupported
        raise InputError(f"train.mixed_precision / train.cpu: {err}") from None


class Trainer:
    """Trains any model following the contract of the module docstring.

    Args:
        conf: the ``train`` section (:data:`TRAIN_DEFAULTS` keys).
        run_dir: output directory of the run.
        accelerator: from :func:`create_accelerator` (the caller needs it before the data, to
            build the rank's sampler).
    """

    default_conf = TRAIN_DEFAULTS

    def __init__(self, conf: Mapping[str, Any], run_dir: str | Path, accelerator: Accelerator) -> None:
        check_train_conf(conf)
        self.conf = dict(conf)
        self.run_dir = Path(run_dir)
        self.accelerator = accelerator
        self.checkpoint_path = self.run_dir / CHECKPOINT_DIR / LAST

    # ------------------------------------------------------------------ helpers
    def _resume_log(self, name: str, step: int) -> list[dict[str, Any]]:
        """The rows of log ``name`` up to ``step``; on the main process the file is rewritten
        (atomically) without the rows after it, which the resumed run logs again."""
        path = self.run_dir / name
        if not path.is_file():
            return []
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        rows = [r for r in rows if int(r.get("step", 0)) <= step]
        if self.accelerator.is_main_process:
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
            os.replace(tmp, path)
        return rows

    def _log_row(self, name: str, row: Mapping[str, Any]) -> None:
        clean = {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in row.items()}
        with open(self.run_dir / name, "a") as f:  # strict JSON: NaN/inf written as null
            f.write(json.dumps(clean, sort_keys=True) + "\n")

    def _step_done(self, step: int) -> None:
        """Called on the main process after each optimizer step (and its logging), before the
        stop-signal check; nothing by default (tests patch it, e.g. to send a real Ctrl-C)."""

    def _save(self, model: nn.Module, optimizer: Any, scheduler: Any, sampler: Any, step: int,
              epoch: int, consumed: int, run_config: Mapping[str, Any] | None) -> Path:
        acc = self.accelerator
        rngs = gather_object([rng_state()]) if acc.num_processes > 1 else [rng_state()]
        if acc.is_main_process:
            unwrapped = acc.unwrap_model(model)
            conf = getattr(unwrapped, "conf", None)
            content = {
                "conf": copy.deepcopy(conf) if isinstance(conf, Mapping) else None,
                "state_dict": {k: v.detach().cpu() for k, v in unwrapped.state_dict().items()},
                "run_config": copy.deepcopy(dict(run_config or {})),
                "training": {
                    "step": step,
                    "epoch": epoch,
                    "num_processes": acc.num_processes,
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": acc.scaler.state_dict() if acc.scaler is not None else None,
                    "sampler": sampler.state_dict(num_consumed=consumed),
                    "rng": rngs,
                    "mixed_precision": acc.mixed_precision,
                },
            }
            save_checkpoint(self.checkpoint_path, content)
        acc.wait_for_everyone()
        return self.checkpoint_path

    def _restore(self, model: nn.Module, optimizer: Any, scheduler: Any, sampler: Any,
                 run_config: Mapping[str, Any] | None) -> tuple[int, int, int, dict | None]:
        acc = self.accelerator
        ckpt = load_checkpoint(self.checkpoint_path)
        tr = ckpt["training"]
        if int(tr["num_processes"]) != acc.num_processes:
            raise InputError(
                f"{self.checkpoint_path}: written by {tr['num_processes']} processes, this run has "
                f"{acc.num_processes}; resume with the same number of processes"
            )
        try:
            acc.unwrap_model(model).load_state_dict(ckpt["state_dict"])
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0]
            raise InputError(f"{self.checkpoint_path}: weights do not fit the model ({first})") from None
        optimizer.load_state_dict(tr["optimizer"])
        scheduler.load_state_dict(tr["scheduler"])
        if acc.scaler is not None and tr.get("scaler") is not None:
            acc.scaler.load_state_dict(tr["scaler"])
        try:
            sampler.load_state_dict(tr["sampler"])
        except ValueError as err:
            raise InputError(f"{self.checkpoint_path}: cannot restore the sampler ({err}); "
                             "the training data or sampling settings changed") from None
        if acc.is_main_process and run_config is not None:
            diffs = config_differences(ckpt.get("run_config") or {}, run_config)
            session = ("train.resume", "train.max_steps", "train.stop_after_steps",
                       "train.progress", "train.overwrite")
            diffs = [d for d in diffs if not d.startswith(session)]
            if diffs:
                logger.warning("resuming with a changed configuration: %s", "; ".join(diffs))
        rngs = tr["rng"]
        rng = rngs[acc.process_index] if acc.process_index < len(rngs) else None
        consumed = int(tr["sampler"]["num_consumed"])
        return int(tr["step"]), int(tr["epoch"]), consumed, rng

    def _validate(self, validate: Callable[[nn.Module, int], Mapping[str, float]], model: nn.Module,
                  step: int) -> dict[str, float] | None:
        acc = self.accelerator
        metrics = None
        if acc.is_main_process:
            unwrapped = acc.unwrap_model(model)
            was_training = unwrapped.training
            unwrapped.eval()
            start = time.perf_counter()
            try:
                with preserved_rng(), torch.no_grad():
                    metrics = {k: float(v) for k, v in dict(validate(unwrapped, step)).items()}
            finally:
                unwrapped.train(was_training)
            if metrics:
                acc.log({f"val/{k}": v for k, v in metrics.items()}, step=step)
                row = {"step": step, "time_s": round(time.perf_counter() - start, 3), **metrics}
                self._log_row("val.jsonl", row)
                self._keep_best(unwrapped, row)
                shown = ", ".join(f"{k} {v:.2f}" for k, v in metrics.items() if "auc" in k)
                logger.info("validation at step %d: %s", step, shown or metrics)
                metrics = row
        acc.wait_for_everyone()
        return metrics

    @property
    def best_path(self) -> Path:
        return self.run_dir / "best.pt"

    def _keep_best(self, model: nn.Module, row: Mapping[str, Any]) -> None:
        """Write :attr:`best_path` when the validation row improves on the best so far."""
        name = self.conf["best_metric"]
        if name is None:
            return
        if name == "auto":
            names = sorted(k for k in row if k.endswith("/auc@10"))
            if not names:  # a validation without pose AUC: name a metric to keep a best model
                return
            name = names[0]
        if name not in row:
            known = ", ".join(k for k in row if k not in ("step", "time_s"))
            raise InputError(f"train.best_metric: {name!r} is not a validation metric; known: {known}")
        if self._best is None and self.conf["resume"] and self.best_path.is_file():
            previous = read_torch_file(self.best_path, "best checkpoint")
            if isinstance(previous, dict) and previous.get("best_metric") == name:
                self._best = {"metric": name, "step": int(previous["step"]),
                              "value": float(previous["best_value"]), "path": str(self.best_path)}
        value = float(row[name])
        if self._best is not None and not value > self._best["value"]:
            return
        self._best = {"metric": name, "step": int(row["step"]), "value": value, "path": str(self.best_path)}
        extra = {"run_config": copy.deepcopy(self._run_config), "step": int(row["step"]), "best_metric": name,
                 "best_value": value}
        _export_model(model, self.best_path, extra)
        logger.info("best %s so far (%.2f): saved %s", name, value, self.best_path)

    # ------------------------------------------------------------------ main loop
    def fit(
        self,
        model: nn.Module,
        dataset: Dataset,
        sampler: Any,
        batch_size: int,
        num_workers: int = 0,
        validate: Callable[[nn.Module, int], Mapping[str, float]] | None = None,
        val_every: int = 0,
        val_at_end: bool = True,
        run_config: Mapping[str, Any] | None = None,
    ) -> TrainResult:
        """Train until ``max_steps`` optimizer steps (resuming from ``checkpoints/last.pt`` with
        ``resume``); see the module docstring.

        Raises:
            InputError: bad data hit during training, bad/incompatible checkpoint.
            TrainingInterrupted: Ctrl-C/SIGTERM (after saving a checkpoint).
        """
        conf, acc = self.conf, self.accelerator
        world, rank = acc.num_processes, acc.process_index
        self._best, self._run_config = None, dict(run_config or {})
        if conf["deterministic"]:
            torch.use_deterministic_algorithms(True, warn_only=True)
        if not conf["resume"]:
            set_seed(int(conf["seed"]) + rank)  # per-rank randomness of the model/loss
        positioned = _PositionedSampler(sampler, rank, world)
        generator = torch.Generator().manual_seed(int(conf["seed"]) * 1009 + rank)
        loader = DataLoader(
            _SeededItems(dataset, int(conf["seed"])), batch_size=int(batch_size), sampler=positioned,
            num_workers=int(num_workers), generator=generator,
            collate_fn=functools.partial(_collate, collate=getattr(dataset, "collate", default_collate)),
            worker_init_fn=_worker_init if num_workers else None, persistent_workers=num_workers > 0,
            pin_memory=acc.device.type == "cuda",
        )
        optimizer = build_optimizer(model, conf)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, conf))
        model, optimizer = acc.prepare(model, optimizer)
        unwrapped = acc.unwrap_model(model)

        step, epoch, consumed, rng = 0, 0, 0, None
        if conf["resume"]:
            step, epoch, consumed, rng = self._restore(model, optimizer, scheduler, sampler, run_config)
            logger.info("resumed from %s at step %d (epoch %d, %d samples consumed)",
                        self.checkpoint_path, step, epoch, consumed)
        if acc.is_main_process:
            acc.init_trackers("tensorboard", config=flatten(dict(run_config or {})))
        if rng is not None:
            set_rng_state(rng)
        elif conf["resume"]:
            logger.warning("no RNG state for rank %d in the checkpoint: seeding afresh", rank)
            set_seed(int(conf["seed"]) + rank + 7919 * step)

        result = TrainResult(self.run_dir, step, self.checkpoint_path, None, num_processes=world)
        if conf["resume"]:  # the run's rows before the resume, without the ones logged after the checkpoint
            result.history = self._resume_log("train_log.jsonl", step)
            result.validation = self._resume_log("val.jsonl", step)
        max_steps = int(conf["max_steps"])
        session_end = max_steps if conf["stop_after_steps"] is None \
            else min(max_steps, step + int(conf["stop_after_steps"]))
        grad_accum = int(conf["grad_accum"])
        clip = float(conf["grad_clip"] or 0.0)
        bar = tqdm(total=max_steps, initial=step, desc="training", unit="step", dynamic_ncols=True,
                   disable=not (conf["progress"] and acc.is_local_main_process))
        state = {"iter": None, "epoch": epoch, "consumed": consumed, "empty": 0}
        record = open(self.run_dir / f"indices_rank{rank}.txt", "a") if conf["record_indices"] else None

        def next_batch() -> tuple[list[int], Any]:
            while True:
                if state["iter"] is None:
                    sampler.set_epoch(state["epoch"])
                    positioned.epoch, positioned.start = state["epoch"], state["consumed"]
                    state["iter"] = iter(loader)
                try:
                    indices, batch = next(state["iter"])
                except StopIteration:
                    state["iter"] = None
                    state["epoch"] += 1
                    state["consumed"] = 0
                    state["empty"] += 1
                    if state["empty"] > 2:
                        raise InputError("the training sampler yields no samples") from None
                    continue
                state["empty"] = 0
                if isinstance(batch, _ItemError):
                    raise InputError(batch.message)
                state["consumed"] += len(indices)
                return indices, batch

        sums: dict[str, torch.Tensor] = {}
        counts: dict[str, torch.Tensor] = {}
        train_time, pairs_done, last_val_step = 0.0, 0, -1
        grad_norm = torch.zeros(())
        model.train()
        try:
            with _StopRequest() as stop:
                while step < session_end:
                    t0 = time.perf_counter()
                    finite = True
                    for _ in range(grad_accum):
                        indices, batch = next_batch()
                        if record is not None:
                            record.write(f"{step + 1} {' '.join(map(str, indices))}\n")
                        batch = send_to_device(batch, acc.device, non_blocking=True)
                        with acc.accumulate(model):
                            inputs = unwrapped.batch_inputs(batch)
                            pred = model(**inputs)
                            losses = unwrapped.loss(pred, batch)
                            acc.backward(losses.total)
                            if acc.sync_gradients:
                                grad_norm = acc.clip_grad_norm_(model.parameters(), clip or float("inf"))
                                finite = grad_norm is None or bool(torch.isfinite(grad_norm))
                                if finite or acc.scaler is not None:
                                    optimizer.step()  # fp16: the grad scaler skips it and lowers its scale
                                optimizer.zero_grad(set_to_none=True)
                        for key, value in {"loss": losses.total, **losses.terms}.items():
                            # mean over the finite values only (a metric is NaN on a step without
                            # matches); tensors, so there is no device sync per step
                            value = value.detach().float()
                            is_finite = torch.isfinite(value)
                            sums[key] = sums.get(key, 0.0) + torch.where(is_finite, value, 0.0)
                            counts[key] = counts.get(key, 0.0) + is_finite.float()
                        pairs_done += len(indices) * world
                    lr = scheduler.get_last_lr()[0]  # the LR this step used
                    scheduler.step()
                    step += 1
                    if not finite:
                        result.skipped_steps += 1
                        logger.warning("step %d: non-finite gradient norm, update skipped", step)
                    train_time += time.perf_counter() - t0
                    bar.update(1)

                    if step % int(conf["log_every"]) == 0 or step == max_steps:
                        local = {k: float(v) / float(counts[k]) if float(counts[k]) else float("nan")
                                 for k, v in sums.items()}
                        rows = gather_object([local]) if world > 1 else [local]
                        if acc.is_main_process:
                            keys = sorted({k for r in rows for k in r})
                            row: dict[str, float] = {
                                k: float(np.mean([r[k] for r in rows if k in r])) for k in keys
                            }
                            row.update(step=step, epoch=state["epoch"], lr=lr,
                                       pairs_per_s=pairs_done / max(train_time, 1e-9),
                                       grad_norm=float(grad_norm) if grad_norm is not None else 0.0,
                                       skipped_steps=result.skipped_steps)
                            acc.log({f"train/{k}": v for k, v in row.items() if k != "step"}, step=step)
                            self._log_row("train_log.jsonl", row)
                            result.history.append(row)
                            bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}",
                                            pairs_s=f"{row['pairs_per_s']:.1f}")
                        sums, counts, train_time, pairs_done = {}, {}, 0.0, 0

                    if acc.is_main_process:
                        self._step_done(step)
                    requested = stop.signum is not None
                    if world > 1:
                        flag = torch.tensor(float(requested), device=acc.device)
                        requested = bool(acc.reduce(flag, "sum").item() > 0)
                    if requested:
                        path = self._save(model, optimizer, scheduler, sampler, step, state["epoch"],
                                          state["consumed"], run_config)
                        signum = stop.signum or signal.SIGINT
                        raise TrainingInterrupted(
                            f"interrupted at step {step}: saved {path} (continue with --resume)",
                            128 + int(signum), path, step)

                    if conf["save_every"] and step % int(conf["save_every"]) == 0 and step < max_steps:
                        self._save(model, optimizer, scheduler, sampler, step, state["epoch"],
                                   state["consumed"], run_config)
                    if validate is not None and val_every and step % val_every == 0 and step < max_steps:
                        row = self._validate(validate, model, step)
                        last_val_step = step
                        if row:
                            result.validation.append(row)
        except TrainingInterrupted:
            raise
        except KeyboardInterrupt:
            last = self.checkpoint_path if self.checkpoint_path.is_file() else None
            raise TrainingInterrupted(
                f"aborted at step {step} without saving"
                + (f" (last checkpoint: {last})" if last else ""), 130, None, step) from None
        finally:
            bar.close()
            if record is not None:
                record.close()
            state["iter"] = None

        self._save(model, optimizer, scheduler, sampler, step, state["epoch"], state["consumed"],
                   run_config)
        result.step = step
        if step < max_steps:  # stop_after_steps: this session ends, the run does not
            result.finished = False
            logger.info("stopped at step %d of %d (train.stop_after_steps): saved %s; continue with "
                        "--resume", step, max_steps, self.checkpoint_path)
            return result
        if validate is not None and val_at_end and last_val_step != step:
            row = self._validate(validate, model, step)
            if row:
                result.validation.append(row)
        if acc.is_main_process:
            model_path = self.run_dir / "model.pt"
            _export_model(unwrapped, model_path, {"run_config": copy.deepcopy(dict(run_config or {})),
                                                  "step": step})
            result.model_path = model_path
        acc.wait_for_everyone()
        result.step, result.best = step, self._best
        return result


def _export_model(model: nn.Module, path: Path, extra: dict[str, Any]) -> None:
    """The model's weights (and conf) with ``extra``, atomically: ``model.save_checkpoint`` where the
    model has one (an S2LD checkpoint), else a plain ``{"conf", "state_dict", **extra}`` file."""
    if hasattr(model, "save_checkpoint"):
        model.save_checkpoint(path, extra=extra)
        return
    state_dict = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_checkpoint(path, {"conf": getattr(model, "conf", None), "state_dict": state_dict, **extra})
