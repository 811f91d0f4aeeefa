"""Relative-pose evaluation as a library: ``evaluate(conf) -> summary`` (the CLI is :mod:`.cli`).

Export predictions (cached), score them, write ``summary.json``, ``results.csv``, ``results.json``,
``auc_curve.png`` and ``viz/*.png`` into ``out``. ``conf`` is one flat mapping whose keys are named like
the ``imatch evaluate`` options (:func:`config_from_dict`)::

    from imatch_s2ld.eval import evaluate
    summary = evaluate({"dataset": "pairs", "pairs": "pairs_with_gt.txt", "images": "imgs",
                        "matcher": "sift", "out": "out"})
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py

from ..conf import reject_unknown
from ..data.datasets import DatasetConfig, load_pairs
from ..data.images import parse_resize, read_image
from ..data.sample import PairSample
from ..errors import InputError
from ..geometry.estimate import describe_estimator
from ..matchers import Matcher
from . import export, score
from .report import write_json, write_results_csv
from .viz import draw_matches, plot_auc_curve

__all__ = ["EvalConfig", "config_from_dict", "dataset_keys", "evaluate", "protocol"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalConfig:
    """The parsed form of :func:`evaluate`'s flat configuration (built by :func:`config_from_dict`)."""

    out: str
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    export: export.ExportConfig = field(default_factory=export.ExportConfig)
    score: score.ScoreConfig = field(default_factory=score.ScoreConfig)
    viz: int = 3


_DATASET_KEYS = {f.name for f in dataclasses.fields(DatasetConfig)} - {"name"}
_EXPORT_KEYS = {"matcher", "matcher_conf", "resize", "overwrite", "progress"}
_SCORE_KEYS = {"estimator", "threshold", "confidence", "max_iters"}


def config_from_dict(conf: Mapping[str, Any]) -> EvalConfig:
    """Build an :class:`EvalConfig` from flat keys named like the CLI options.

    Keys: ``out`` (required), ``dataset`` (name), ``pairs``, ``images``, ``data``, ``model``,
    ``root``, ``index``, ``max_pairs``, ``min_covisible``, ``max_angle_deg``, ``matcher``,
    ``matcher_conf``, ``resize``, ``overwrite``, ``progress``, ``estimator``, ``threshold``,
    ``confidence``, ``max_iters``, ``viz``.

    Raises:
        InputError: unknown key or missing ``out``.
    """
    conf = dict(conf)
    reject_unknown(conf, _DATASET_KEYS | _EXPORT_KEYS | _SCORE_KEYS | {"out", "dataset", "viz"}, "evaluation")
    if conf.get("out") is None:
        raise InputError("--out is required")
    dataset = DatasetConfig(
        name=conf.get("dataset", "pairs"), **{k: conf[k] for k in _DATASET_KEYS if k in conf}
    )
    exp = export.ExportConfig(
        matcher=conf.get("matcher", "sift"),
        matcher_conf=dict(conf.get("matcher_conf") or {}),
        resize=parse_resize(conf.get("resize")),
        overwrite=bool(conf.get("overwrite", False)),
        progress=bool(conf.get("progress", True)),
    )
    sc = score.ScoreConfig(
        estimator=conf.get("estimator", "ransac"),
        threshold_px=conf.get("threshold"),
        confidence=float(conf.get("confidence", 0.99999)),
        max_iters=int(conf.get("max_iters", 1000)),
    )
    return EvalConfig(str(conf["out"]), dataset, exp, sc, int(conf.get("viz", 3)))


def _versions() -> dict[str, str]:
    import cv2
    import kornia
    import numpy
    import pycolmap
    import torch

    from .. import __version__

    return {
        "imatch_s2ld": __version__, "opencv": cv2.__version__, "pycolmap": pycolmap.__version__,
        "torch": torch.__version__, "kornia": kornia.__version__, "numpy": numpy.__version__,
    }


def protocol(conf: EvalConfig) -> dict[str, Any]:
    """Every setting that affects the numbers (stored in ``summary.json`` and printed)."""
    ds = conf.dataset
    sources = {k: getattr(ds, k) for k in ("pairs", "images", "data", "model", "root", "index")
               if getattr(ds, k) is not None}
    sc = conf.score
    resize = conf.export.resize
    return {
        "dataset": ds.name,
        "dataset_source": sources,
        "max_pairs": ds.max_pairs,
        "matcher": conf.export.matcher,
        "matcher_conf": dict(conf.export.matcher_conf),
        "resize": "none" if resize is None else (list(resize) if isinstance(resize, tuple)
                                                 else resize),
        "estimator": sc.estimator,
        "estimator_description": describe_estimator(sc.estimator, sc.threshold, sc.confidence),
        "threshold_px": sc.threshold,
        "confidence": sc.confidence,
        "max_iters": sc.max_iters,
        "image_decoding": "grayscale (cv2.IMREAD_GRAYSCALE) for grayscale matchers, else RGB",
        "epipolar_threshold": sc.epipolar_threshold,
        "precision_definition": "mean over pairs of the fraction of matches with squared "
        f"symmetric epipolar distance (normalized coords) < {sc.epipolar_threshold:g}, percent",
        "pose_error": score.POSE_ERROR_DEFINITION,
        "auc_thresholds": list(sc.auc_thresholds),
        "auc_definition": "SuperGlue/LoFTR pose_auc (trapezoid of cumulative recall), percent",
        "runtime_definition": "mean seconds of the matcher's match() call per pair "
        "(after image reading and resizing)",
        "versions": _versions(),
    }


def _viz_name(index: int, sample: PairSample) -> str:
    stem = f"{index:04d}_{Path(sample.name0).stem}_{Path(sample.name1).stem}"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", stem) + ".png"


def _write_viz(
    conf: EvalConfig, pairs: list[PairSample], rows: list[dict], predictions: Path, out: Path
) -> None:
    with h5py.File(predictions, "r") as f:
        for index, (sample, row) in enumerate(zip(pairs[: conf.viz], rows)):
            pred = export.load_prediction(f, sample)
            K0 = score.intrinsics_for_size(sample.K0, sample.image_size0, pred.size0)
            K1 = score.intrinsics_for_size(sample.K1, sample.image_size1, pred.size1)
            d = score.epipolar_errors(pred.kpts0, pred.kpts1, sample.T_0to1, K0, K1)
            text = (f"{conf.export.matcher}: {row['n_matches']} matches, precision "
                    f"{100 * row['precision']:.1f}%, err {row['err_pose']:.2f} deg")
            draw_matches(
                read_image(sample.path0), read_image(sample.path1), pred.kpts0, pred.kpts1,
                d < conf.score.epipolar_threshold, out / "viz" / _viz_name(index, sample), text,
            )


def dataset_keys(dataset: DatasetConfig) -> dict[str, Any]:
    """The flat ``evaluate`` keys that select ``dataset`` (``dataset`` = its name, and its set fields)."""
    keys = {k: getattr(dataset, k) for k in _DATASET_KEYS if getattr(dataset, k) is not None}
    return {"dataset": dataset.name, **keys}


def evaluate(conf: Mapping[str, Any], matcher: Matcher | None = None) -> dict[str, Any]:
    """Run export + score and write all outputs into ``conf["out"]``; return the summary.

    Args:
        conf: flat keys named like the CLI options (:func:`config_from_dict`).
        matcher: an already built matcher object (e.g. a model being trained); ``conf``'s
            ``matcher`` name is then only a label and is not loaded.
    Returns:
        The summary (also in ``summary.json``): ``auc@5``, ``auc@10``, ``auc@20`` (percent),
        ``precision`` (percent), ``median_matches``, ``runtime_s_per_pair``, ``num_pairs``,
        ``num_failures``, ``protocol``.
    Raises:
        InputError: bad dataset/matcher/option (one line naming the file, line or argument).
    """
    conf = config_from_dict(conf)
    conf.score.check()  # validate before the expensive part
    pairs = load_pairs(conf.dataset)
    out = Path(conf.out)
    predictions = export.main(conf.export, pairs, out, matcher=matcher)
    rows, summary = score.main(conf.score, pairs, predictions)
    summary["protocol"] = protocol(conf)
    write_json(out / "summary.json", summary)
    write_json(out / "results.json", rows)
    write_results_csv(out / "results.csv", rows)
    max_t = max(conf.score.auc_thresholds)
    plot_auc_curve(
        {"max(R, t)": [r["err_pose"] for r in rows], "R": [r["err_R"] for r in rows],
         "t": [r["err_t"] for r in rows]},
        out / "auc_curve.png", max_t,
        title=f"{conf.dataset.name} / {conf.export.matcher} / "
        f"{summary['protocol']['estimator_description']}",
    )
    if conf.viz > 0:
        _write_viz(conf, pairs, rows, predictions, out)
    return summary
