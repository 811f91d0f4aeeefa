"""Typed results of the fine-tuning steps (:mod:`.run`): what each step returns and the report reads.

inputs (:class:`Inputs`) -> preflight and focal search (:class:`Preflight`) -> window selection
(:class:`WindowSelection`) -> before (:class:`Measurement`) -> training (:class:`Training`) ->
after (:class:`Measurement`) -> report (:class:`FinetuneResult`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from ..data.datasets import DatasetConfig
from ..train.trainer import TrainResult
from .data import VideoWindows
from .intrinsics import Intrinsics
from .model import FinetuneModel

__all__ = ["FinetuneResult", "Inputs", "Measurement", "Preflight", "ProbeBA", "Training", "WindowSelection"]


@dataclass
class Inputs:
    """Checked inputs (nothing written yet): the windows of the video, its intrinsics, the model to
    fine-tune, the evaluation pairs (None: none given), the baseline matchers, and the evaluation size."""

    conf: dict[str, Any]
    out: Path
    windows: VideoWindows
    intrinsics: Intrinsics
    model: FinetuneModel
    dataset: DatasetConfig | None
    baselines: list[str]
    eval_resize: Any


@dataclass
class ProbeBA:
    """Bundle adjustment of fixed probe windows (:func:`.probe.probe_ba`).

    ``windows``: one row per window ``{"window", "success", "reason", "ba_rms_px", ..., "median_flow_px",
    "observations"}``; the means are over the reconstructed windows (None if none).
    """

    windows: list[dict[str, Any]]
    success: int
    ba_rms_px: float | None
    ba_rms_init_px: float | None
    num_points: float | None
    inlier_ratio: float | None

    def summary(self) -> dict[str, Any]:
        """The means without the per-window rows, and the number of probe windows."""
        return {"success": self.success, "ba_rms_init_px": self.ba_rms_init_px, "ba_rms_px": self.ba_rms_px,
                "num_points": self.num_points, "inlier_ratio": self.inlier_ratio,
                "windows": len(self.windows)}


@dataclass
class Preflight:
    """The preflight's probe BA (with the configured geometry source), the intrinsics to train with,
    and the focal search (:func:`.probe.refine_focal`; None when the focal was not searched)."""

    K: np.ndarray
    probe: ProbeBA
    focal_search: dict[str, Any] | None = None


@dataclass
class WindowSelection:
    """The windows training draws from (:func:`.run.select_windows`).

    ``usable`` is None when the source depends on the matcher (every window stays; failures are
    skipped during training); ``rejected``: reason -> windows.
    """

    source: str
    windows: int
    usable: list[int] | None
    rejected: dict[str, int]
    seconds: float
    train_set: Dataset

    def summary(self) -> dict[str, Any] | None:
        if self.usable is None:
            return None
        return {"windows": self.windows, "usable": len(self.usable), "rejected": dict(self.rejected)}


@dataclass
class Measurement:
    """One matcher measured on the video and the pairs (:func:`.evaluation.measure`): BA of the probe
    windows with its own tracks and with its output matches, the label-free self-check and track check,
    and the relative-pose evaluation summary (None without evaluation pairs)."""

    probe: ProbeBA
    probe_predictions: ProbeBA
    self_check: dict[str, Any] | None
    track_check: dict[str, Any] | None
    eval: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Measurement:
        return cls(ProbeBA(**d["probe"]), ProbeBA(**d["probe_predictions"]), d["self_check"],
                   d["track_check"], d["eval"])


@dataclass
class Training:
    """The training step: the trainer's result (its rows span the whole run, resumes included), the
    windows the model skipped, per kind of reason, and ``final_checks``: the self-check and evaluation
    summaries of the last step's validation (``{"self_check", "eval"}``; None when it did not run),
    which the "after" measurement reuses."""

    result: TrainResult
    skip_reasons: dict[str, int] = field(default_factory=dict)
    final_checks: dict[str, Any] | None = None

    @property
    def steps(self) -> int:
        return int(self.result.step)


@dataclass
class FinetuneResult:
    """Everything a fine-tuning run produced (main process); ``report`` is ``OUT/report.json``."""

    inputs: Inputs
    preflight: Preflight
    selection: WindowSelection
    before: Measurement
    after: Measurement
    baselines: dict[str, dict[str, Any]]
    training: Training
    seconds: float
    report: dict[str, Any] = field(default_factory=dict)
    pictures: list[Path] = field(default_factory=list)

    @property
    def checkpoint(self) -> Path | None:
        """The fine-tuned model (``OUT/model.pt``)."""
        return self.training.result.model_path
