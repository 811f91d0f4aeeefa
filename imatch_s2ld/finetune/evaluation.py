"""Measuring a matcher during fine-tuning: relative pose on the evaluation pairs (:func:`evaluate_pairs`,
:func:`evaluate_baselines`) and on the video without labels (:func:`measure`: probe BAs, self-check,
track check, pictures)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate.utils import broadcast_object_list

from ..data.datasets import DatasetConfig
from ..models.s2ld import S2LD
from .probe import probe_ba
from .results import Inputs, Measurement
from .selfcheck import PseudoPair, self_check, track_check

__all__ = ["evaluate_baselines", "evaluate_pairs", "measure", "measure_before"]

logger = logging.getLogger(__name__)


def evaluate_baselines(
    names: list[str], dataset: DatasetConfig, econf: Mapping[str, Any], out: Path, resize: Any
) -> dict[str, dict[str, Any]]:
    """Evaluate each matcher of ``names`` on the evaluation pairs with the before/after protocol, into
    ``out/<name>/`` (predictions cached there: a resumed run reuses them). Returns name -> summary."""
    from ..eval import dataset_keys, evaluate

    results = {}
    for name in names:
        logger.info("baseline %s on the evaluation pairs", name)
        conf = {**dataset_keys(dataset), "out": str(out / name.replace(":", "_").replace("/", "_")),
                "matcher": name, "resize": resize, "progress": False, "estimator": econf["estimator"],
                "threshold": econf["threshold"], "viz": 0}
        results[name] = evaluate(conf)
    return results


def evaluate_pairs(
    net: S2LD, dataset: DatasetConfig, econf: Mapping[str, Any], out: Path, label: str, resize: Any, viz: int
) -> dict[str, Any]:
    """Relative-pose evaluation of ``net`` (:func:`imatch_s2ld.eval.evaluate`) into ``out``."""
    from ..eval import dataset_keys, evaluate

    net.name = label  # type: ignore[attr-defined]
    conf = {**dataset_keys(dataset), "out": str(out), "matcher": label, "resize": resize, "overwrite": True,
            "progress": False, "estimator": econf["estimator"], "threshold": econf["threshold"],
            "viz": int(viz)}
    return evaluate(conf, matcher=net)


def measure(inputs: Inputs, probe_idx: list[int], check: list[PseudoPair], stage: str,
            label: str, done: Mapping[str, Any] | None = None) -> Measurement:
    """BA of the probe windows (own tracks and output matches), the self-check and track check on
    ``check``, the pictures (``OUT/video/<stage>/viz`` without evaluation pairs) and the evaluation of the
    current matcher (into ``OUT/eval/<stage>``, if there are pairs). ``done``: ``{"self_check", "eval"}``
    summaries already measured for this matcher (the last step's validation); those are not redone."""
    from .report import draw_video_pairs

    model, windows, conf = inputs.model, inputs.windows, inputs.conf
    done = done or {}
    result = Measurement(
        probe=probe_ba(model, windows, probe_idx),
        probe_predictions=probe_ba(model, windows, probe_idx, predictions=True),
        self_check=done.get("self_check") or self_check(model.net, windows, check),
        track_check=track_check(model.net, windows, check),
        eval=None,
    )
    viz = int(conf["eval"]["viz"])
    if inputs.dataset is None and viz > 0:
        spread = np.linspace(0, len(probe_idx) - 1, min(viz, len(probe_idx))).astype(int)
        picks = [probe_idx[i] for i in spread]
        draw_video_pairs(model.net, windows, sorted(set(picks)), windows.K.double().numpy(),
                         inputs.out / "video" / stage / "viz", label)
    if inputs.dataset is not None:
        result.eval = done.get("eval") or evaluate_pairs(
            model.net, inputs.dataset, conf["eval"], inputs.out / "eval" / stage, label, inputs.eval_resize,
            viz)
    return result


def measure_before(inputs: Inputs, probe_idx: list[int], check: list[PseudoPair], main_proc: bool,
                   resume: bool) -> Measurement:
    """:func:`measure` of the starting matcher on the main process, cached in ``OUT/before.json`` (a
    resumed run reads it back) and broadcast to the other processes."""
    from ..eval.report import write_json

    path = inputs.out / "before.json"
    before: Measurement | None = None
    if main_proc:
        if resume and path.is_file():
            before = Measurement.from_json(json.loads(path.read_text()))
        else:
            before = measure(inputs, probe_idx, check, "before", "s2ld-start")
            write_json(path, before.to_json())
    box = [before]
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        broadcast_object_list(box)
    assert box[0] is not None
    return box[0]
