"""Pooled relative-pose AUC of several evaluations and a paired bootstrap of their differences.

Each evaluation is a folder written by ``imatch evaluate`` (its ``results.json``: one row per pair with
``err_pose`` and ``failure``) or a folder of such folders (one per scene). The pairs of every folder
must be the same (keyed by sub-folder, ``name0``, ``name1``): :func:`compare` pools them (AUC over all
pairs, the evaluation's :func:`~imatch_s2ld.geometry.metrics.pose_auc`) and resamples the pairs with
replacement to give each difference to the baseline its standard deviation (paired bootstrap: the same
resampled pairs for both). A difference within about two standard deviations is within the noise of
the pair set.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..geometry.metrics import pose_auc

__all__ = ["compare", "load_errors"]

PairKey = tuple[str, str, str]


def load_errors(folder: str | Path, include: Sequence[str] | None = None) -> dict[PairKey, float]:
    """Pose errors (degrees; ``inf`` for failures) of every pair under ``folder``.

    Args:
        folder: an evaluation folder or a folder of them (``results.json`` found at any depth).
        include: only the evaluation folders with these names (e.g. scene names); None: all.
    Returns:
        ``{(sub-folder, name0, name1): error}``.
    Raises:
        InputError: no ``results.json`` (after ``include``), or one that cannot be read.
    """
    root = Path(folder)
    files = sorted(root.rglob("results.json")) if root.is_dir() else []
    if include is not None:
        files = [f for f in files if f.parent.name in set(include)]
    if not files:
        extra = f" in a folder named {', '.join(include)}" if include else ""
        raise InputError(f"{root}: no results.json{extra} (a folder written by imatch evaluate)")
    errors: dict[PairKey, float] = {}
    for path in files:
        try:
            rows = json.loads(path.read_text())
            sub = str(path.parent.relative_to(root))
            for r in rows:
                e = r["err_pose"]
                bad = r.get("failure") or e is None or not np.isfinite(float(e))
                errors[(sub, str(r["name0"]), str(r["name1"]))] = np.inf if bad else float(e)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise InputError(f"{path}: not an evaluation results.json ({err})") from None
    return errors


def compare(baseline: Mapping[PairKey, float], others: Mapping[str, Mapping[PairKey, float]],
            thresholds: Sequence[float] = (5, 10, 20), samples: int = 1000,
            seed: int = 0) -> dict[str, dict[str, Any]]:
    """Pooled AUC of ``baseline`` and each of ``others`` and the paired-bootstrap std of the difference.

    Returns:
        ``{name: {"pairs": n, "auc@5": ..., "diff@5": other - baseline, "std@5": ..., ...}}``; the
        baseline's row is ``"baseline"`` (differences 0).
    Raises:
        InputError: an evaluation whose pairs differ from the baseline's (names the first missing pair).
    """
    keys = sorted(baseline)
    base = np.array([baseline[k] for k in keys])
    idx = np.random.default_rng(seed).integers(0, len(keys), size=(int(samples), len(keys)))
    out: dict[str, dict[str, Any]] = {}
    for name, errors in {"baseline": baseline, **others}.items():
        missing = sorted(set(keys) ^ set(errors))
        if missing:
            raise InputError(f"{name}: its pairs differ from the baseline's (e.g. {'/'.join(missing[0])})")
        err = np.array([errors[k] for k in keys])
        row: dict[str, Any] = {"pairs": len(keys)}
        for t in thresholds:
            key = f"auc@{t:g}"
            row[key] = pose_auc(err, (t,))[key]
            boots = [pose_auc(err[i], (t,))[key] - pose_auc(base[i], (t,))[key] for i in idx]
            row[f"diff@{t:g}"] = row[key] - pose_auc(base, (t,))[key]
            row[f"std@{t:g}"] = float(np.std(boots))
        out[name] = row
    return out
