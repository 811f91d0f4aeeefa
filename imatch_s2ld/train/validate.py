"""Periodic validation during training: relative-pose AUC of the model being trained.

The model is used as a :class:`imatch_s2ld.matchers.Matcher` (``model.match(img0, img1)``) and
run through the project's evaluation (:func:`imatch_s2ld.eval.evaluate` with
``matcher=model``): same protocol as ``imatch evaluate`` (OpenCV RANSAC, pose error
``max(R, t)``, AUC@5/10/20 in percent). Validation sets (the ``val`` section):

- ``synthetic``: held-out pairs of the synthetic generator, by default every
  ``pairs_with_gt.txt`` under ``<data.synthetic.out>/video`` (the ``eval/`` views rendered next to
  each video, never used for training); ``data`` may name any generated folder or pairs file.
- ``megadepth1500``: MegaDepth-1500 when ``root`` (the image root) is set; ``index`` defaults to
  the shared index folder.

Each evaluation writes its full output (``summary.json``, ``results.csv``, ``auc_curve.png``)
to ``<run_dir>/val/<name>/`` (overwritten by the next validation); the metrics returned are
``<name>/auc@5``, ``<name>/auc@10``, ``<name>/auc@20``, ``<name>/precision``,
``<name>/median_matches``, ``<name>/num_failures``. The trainer logs them and appends them to
``val.jsonl``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..data.datasets import DatasetConfig, load_pairs
from ..errors import InputError

logger = logging.getLogger(__name__)

#: Defaults of the ``val`` section.
VAL_DEFAULTS: dict[str, Any] = {
    "every_n_steps": 500,
    "at_end": True,
    "estimator": "ransac",
    "threshold": None,
    "synthetic": {"enabled": True, "data": None, "max_pairs": 50, "resize": None},
    "megadepth1500": {"root": None, "index": None, "max_pairs": None, "resize": 840},
}

METRICS = ("auc@5", "auc@10", "auc@20", "precision", "median_matches", "num_failures")


class Validator:
    """``validator(model, step) -> {"<set>/auc@5": ..., ...}`` over the configured sets.

    Args:
        conf: the ``val`` section (:data:`VAL_DEFAULTS` keys).
        run_dir: the run directory (outputs go to ``<run_dir>/val/<set>/``).
        synthetic_root: the generated training data (for the default held-out pairs); None when
            no synthetic data is used.

    The sets are checked at construction (pairs readable, images listed), so a wrong path fails
    before training starts.

    Raises:
        InputError: a configured set is missing or unreadable.
    """

    def __init__(self, conf: Mapping[str, Any], run_dir: str | Path,
                 synthetic_root: str | Path | None = None, check: bool = True) -> None:
        self.conf = conf
        self.run_dir = Path(run_dir)
        self.sets: dict[str, dict[str, Any]] = {}
        syn = conf["synthetic"]
        if syn["enabled"]:
            data = syn["data"]
            if data is None and synthetic_root is not None:
                default = Path(synthetic_root) / "video"
                if default.is_dir() and any(default.rglob("pairs_with_gt.txt")):
                    data = str(default)
                else:
                    logger.warning("no held-out synthetic pairs under %s (the preset renders none): "
                                   "synthetic validation is off", default)
            elif data is None:
                logger.warning("val.synthetic.data is not set and no synthetic data is used: "
                               "synthetic validation is off")
            if data is not None:
                self.sets["synthetic"] = {"dataset": "synthetic", "data": str(data),
                                          "max_pairs": syn["max_pairs"], "resize": syn["resize"]}
        md = conf["megadepth1500"]
        if md["root"] is not None:
            self.sets["megadepth1500"] = {"dataset": "megadepth1500", "root": str(md["root"]),
                                          "index": md["index"], "max_pairs": md["max_pairs"],
                                          "resize": md["resize"]}
        if check:
            for name, spec in list(self.sets.items()):
                pairs = load_pairs(self._dataset_config(spec))
                if not pairs:
                    logger.warning("validation set %s has no pairs: skipped", name)
                    del self.sets[name]

    @staticmethod
    def _dataset_config(spec: Mapping[str, Any]) -> DatasetConfig:
        keys = ("data", "root", "index", "max_pairs")
        return DatasetConfig(name=spec["dataset"], **{k: spec[k] for k in keys if spec.get(k) is not None})

    def __bool__(self) -> bool:
        return bool(self.sets)

    def __call__(self, model: Any, step: int) -> dict[str, float]:
        from ..eval import evaluate

        metrics: dict[str, float] = {}
        for name, spec in self.sets.items():
            eval_conf = {
                **{k: v for k, v in spec.items() if v is not None},
                "out": str(self.run_dir / "val" / name),
                "matcher": getattr(model, "name", "model"),
                "estimator": self.conf["estimator"],
                "viz": 0,
                "overwrite": True,
                "progress": False,
            }
            if self.conf["threshold"] is not None:
                eval_conf["threshold"] = self.conf["threshold"]
            try:
                summary = evaluate(eval_conf, matcher=model)
            except InputError as err:
                raise InputError(f"validation on {name}: {err}") from None
            metrics.update({f"{name}/{k}": float(summary[k]) for k in METRICS})
        return metrics
