"""Step 1 of fine-tuning: check every input before anything is written (:func:`check_inputs`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..data.datasets import DatasetConfig, load_pairs
from ..errors import InputError
from ..models.s2ld import DEFAULT_CHECKPOINT, S2LD, merge_model_conf
from ..train.checkpoint import CHECKPOINT_DIR, LAST, load_checkpoint
from ..train.trainer import check_train_conf
from .data import VideoWindows
from .implicit import check_ba_grad
from .intrinsics import Intrinsics, resolve_intrinsics
from .model import FinetuneModel
from .results import Inputs
from .video import open_videos

__all__ = [
    "baseline_names", "build_windows", "check_baselines", "check_inputs", "check_out_folder", "eval_dataset",
    "load_start", "window_spacings",
]


def check_inputs(conf: Mapping[str, Any]) -> Inputs:
    """Check the output folder, the video (every frame decoded), the intrinsics, the starting
    checkpoint, the loss options, the evaluation pairs and the baselines; build the model.

    Args:
        conf: a merged :data:`.run.DEFAULT_CONF`.
    Raises:
        InputError: one line naming the file or option; nothing is written then.
    """
    if conf["out"] is None:
        raise InputError("--out is required")
    check_ba_grad(conf["model"]["loss"])  # before decoding the video (FinetuneLoss checks it again)
    out = Path(conf["out"])
    check_out_folder(out)
    tconf = conf["train"]
    check_train_conf(tconf)
    last = out / CHECKPOINT_DIR / LAST
    if tconf["resume"] and not last.is_file():
        raise InputError(f"{last}: no checkpoint to resume from (--resume)")
    if tconf["resume"]:
        load_checkpoint(last)  # a corrupt checkpoint fails now, not after the preflight
    if not tconf["resume"] and last.is_file() and not tconf["overwrite"]:
        raise InputError(
            f"{out}: already holds a fine-tuning run; pass --resume to continue it, "
            "--overwrite to start over, or another --out"
        )
    windows, intr = build_windows(conf)
    model = FinetuneModel(load_start(conf["init"], conf["color"]), conf["model"])
    dataset = eval_dataset(conf["eval"])
    if dataset is not None:
        load_pairs(dataset)  # fail now on a bad pairs file
    baselines = baseline_names(conf["eval"]["baselines"])
    check_baselines(baselines, dataset)
    eval_resize = conf["eval"]["resize"]
    if eval_resize == "video":
        eval_resize = max(windows.video.image_size) if conf["resize"] is not None else None
    return Inputs(dict(conf), out, windows, intr, model, dataset, baselines, eval_resize)


def check_out_folder(out: Path) -> None:
    """``--out`` must be a folder (existing or not) that can be written.

    Raises:
        InputError: it is a file, or the folder (or its first existing parent) is not writable.
    """
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: --out is a file, not a folder")
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{out}: --out cannot be written ({existing} is not a writable folder)")


def build_windows(conf: Mapping[str, Any]) -> tuple[VideoWindows, Intrinsics]:
    """Open the video(s) and the intrinsics and cut them into windows (raises InputError on bad input).
    ``conf["video"]``: one path, or a list of paths (several videos of one camera)."""
    if conf["video"] is None:
        raise InputError("--video is required")
    video = open_videos(conf["video"], int(conf["stride"]), conf["max_frames"], conf["resize"])
    intr = resolve_intrinsics(video, conf["intrinsics"])
    for i in range(len(video)):  # decode every frame now: a corrupt one fails before any output
        video.frame_rgb(i)
    spacings = window_spacings(conf["window"]["spacing"])
    windows = VideoWindows(video, intr.K, int(conf["window"]["length"]), spacings)
    return windows, intr


def window_spacings(value: Any) -> list[int]:
    """``window.spacing`` as a list: an int, a list of ints, or a comma-separated string (``"2,4"``)."""
    if isinstance(value, str):
        items = value.split(",")
    else:
        items = list(value) if isinstance(value, list | tuple) else [value]
    try:
        spacings = [int(str(v).strip()) for v in items]
    except ValueError:
        spacings = []
    if not spacings or min(spacings) < 1:
        raise InputError(f"--window-spacing: expected integers >= 1 (e.g. 2 or 2,4), got {value!r}")
    return spacings


def load_start(path: str | None, color: bool | None = None) -> S2LD:
    """The starting S2LD (``--init``; default: the shipped checkpoint); ``color`` True / False: read
    RGB / gray frames (an ALIKED backbone), None: what the checkpoint was trained on."""
    ckpt = DEFAULT_CHECKPOINT if path is None else Path(path)
    where = "--init" if path is not None else "the shipped default checkpoint"
    if not ckpt.is_file():
        raise InputError(f"{ckpt}: checkpoint not found ({where})")
    if color is not None and not isinstance(color, bool):
        raise InputError(f"color: expected true, false or null, got {color!r}")
    net = S2LD.from_checkpoint(ckpt)
    if color is None or net.in_channels == (3 if color else 1):
        return net
    if net.conf["backbone"]["name"] != "aliked":
        raise InputError(f"color: {ckpt} has a {net.conf['backbone']['name']} backbone, which reads gray")
    switched = S2LD(merge_model_conf(net.conf, {"backbone": {"color": color}}), pretrained=False)
    switched.load_state_dict(net.state_dict())  # the same weights (the file is read once)
    return switched.eval()


def eval_dataset(econf: Mapping[str, Any]) -> DatasetConfig | None:
    """The evaluation pairs as a :class:`DatasetConfig` (``pairs`` file or ``colmap`` model folder)."""
    if econf["pairs"] is None:
        if econf["images"] is not None:
            raise InputError("--eval-images needs --eval-pairs")
        return None
    path = Path(econf["pairs"])
    if not path.exists():
        raise InputError(f"{path}: evaluation pairs not found (--eval-pairs)")
    kw = {"max_pairs": econf["max_pairs"]}
    if path.is_dir():
        return DatasetConfig(name="colmap", model=str(path), images=econf["images"], **kw)
    return DatasetConfig(name="pairs", pairs=str(path), images=econf["images"], **kw)


def baseline_names(value: Any) -> list[str]:
    """``eval.baselines`` as a list of matcher names: a list, or a comma-separated string (``"sift,orb"``)."""
    if value is None:
        return []
    if isinstance(value, str):
        items = value.split(",")
    else:
        items = list(value) if isinstance(value, list | tuple) else [value]
    if not all(isinstance(v, str) for v in items):
        raise InputError(f"--baselines: expected comma-separated matcher names, got {value!r}")
    return [v.strip() for v in items if v.strip()]


def check_baselines(names: list[str], dataset: DatasetConfig | None) -> None:
    """Refuse baselines without evaluation pairs, and unknown names or missing weights (before any output).

    Raises:
        InputError: one line naming the option or the matcher.
    """
    from ..matchers import check_matcher

    if names and dataset is None:
        raise InputError("--baselines needs --eval-pairs (baselines are evaluated on the evaluation pairs)")
    for name in names:
        check_matcher(name)
