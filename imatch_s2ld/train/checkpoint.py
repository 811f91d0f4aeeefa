"""Training-state checkpoints: one file, written atomically, readable with ``weights_only=True``.

``<run_dir>/checkpoints/last.pt`` is a dict::

    {
      "conf": model.conf,                # the model's resolved config (rebuilds it alone:
      "state_dict": {name: tensor},      #   S2LD.from_checkpoint("last.pt") works)
      "run_config": {...},               # the resolved run configuration (config.yaml)
      "checksum": str,                   # sha256 of state_dict (weights_checksum): checked on load
      "training": {
        "step": int,                     # optimizer steps done
        "epoch": int,                    # sampler epoch in progress
        "num_processes": int,            # world size that wrote it
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": grad_scaler.state_dict() | None,   # fp16 only
        "sampler": sampler.state_dict(num_consumed), # exact position in the epoch (per rank:
                                                     #   every rank has consumed as many samples)
        "rng": [state of rank 0, state of rank 1, ...],  # per-rank RNG states, gathered
      },
    }

Per-rank RNG states are **gathered** onto rank 0 (``accelerate.utils.gather_object``) and stored
in the one file, so a checkpoint is complete and atomic (no ``rng_rank{r}.pt`` side files that
could belong to another step). Each state holds python ``random``, numpy's global RNG (as a
``(name, int64 tensor, pos, has_gauss, cached_gaussian)`` tuple: no numpy objects, so
``torch.load(weights_only=True)`` accepts it), torch's CPU RNG and, where present, the current
CUDA device's RNG. Resuming with another world size is refused (the sampler shards by rank).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..io import atomic_path, read_torch_file

CHECKPOINT_DIR = "checkpoints"
LAST = "last.pt"


def rng_state() -> dict[str, Any]:
    """This process's RNG states as plain Python values and tensors (``weights_only``-safe)."""
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (str(name), torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos),
                  int(has_gauss), float(cached)),
        "torch": torch.get_rng_state(),
        "cuda": None,
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore :func:`rng_state` (CUDA only where it was saved and CUDA is available)."""
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(v) for v in internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((str(name), np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss),
                         float(cached)))
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].cpu())


def weights_checksum(state_dict: Mapping[str, torch.Tensor]) -> str:
    """sha256 of a state dict: names, dtypes, shapes and bytes of every tensor, in name order."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(path: str | Path, content: Mapping[str, Any]) -> Path:
    """``torch.save`` ``content`` atomically (temp file + rename; a crash keeps the old file), with the
    checksum of its ``state_dict`` (:func:`weights_checksum`) that :func:`load_checkpoint` verifies."""
    path = Path(path)
    content = dict(content)
    if isinstance(content.get("state_dict"), Mapping):
        content["checksum"] = weights_checksum(content["state_dict"])
    with atomic_path(path) as tmp:
        torch.save(content, tmp)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a training checkpoint on the CPU with ``weights_only=True``.

    Raises:
        InputError: missing, unreadable, not a training checkpoint, or its weights do not match the
            checksum stored with them (corrupted bytes); names the file.
    """
    path = Path(path)
    ckpt = read_torch_file(path, "checkpoint", missing_hint=" (nothing to resume)")
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict) \
            or not isinstance(ckpt.get("training"), dict):
        raise InputError(f"{path}: not a training checkpoint (needs 'state_dict' and 'training')")
    stored = ckpt.get("checksum")
    if stored is not None and stored != weights_checksum(ckpt["state_dict"]):
        raise InputError(f"{path}: corrupted checkpoint (its weights do not match their stored checksum)")
    return ckpt


def config_differences(old: Mapping[str, Any], new: Mapping[str, Any], _prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested configs (for the resume log)."""
    diffs = []
    for key in sorted(set(old) | set(new), key=str):
        name = f"{_prefix}{key}"
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            diffs += config_differences(a, b, f"{name}.")
        elif a != b:
            diffs.append(f"{name}: {a!r} -> {b!r}")
    return diffs
