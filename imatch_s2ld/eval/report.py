"""Writing results: ``summary.json``, ``results.csv``/``results.json``, and the stdout table."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from ..io import atomic_path

RESULT_COLUMNS = (
    "scene", "name0", "name1", "n_matches", "n_correct", "precision", "n_inliers", "err_R", "err_t",
    "err_pose", "time_s", "failure",
)


def _json_safe(value: Any) -> Any:
    """Infinite/nan floats -> ``None`` (JSON has no inf); recurse into containers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_json(path: str | Path, content: Any) -> Path:
    """Write strict JSON (inf/nan as ``null``), indented, atomically (temp file + rename)."""
    path = Path(path)
    text = json.dumps(_json_safe(content), indent=2, allow_nan=False) + "\n"
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def write_results_csv(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    """One row per pair; infinite errors are written as ``inf``."""
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=RESULT_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def _fmt(value: Any, metric: bool = False) -> str:
    if isinstance(value, float):
        return f"{value:.2f}" if metric else f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return "x".join(str(v) for v in value) if all(isinstance(v, int) for v in value) else str(
            list(value))
    return str(value)


def format_summary(summary: dict[str, Any]) -> str:
    """A plain-text table: every protocol setting followed by the metrics."""
    protocol = summary.get("protocol", {})
    metrics = [k for k in summary if k.startswith("auc@")] + [
        "precision", "median_matches", "runtime_s_per_pair", "num_pairs", "num_failures",
    ]
    lines = []
    rows: list[tuple[str, str]] = []
    for key, value in protocol.items():
        if isinstance(value, dict):
            rows += [(f"{key}.{k}", _fmt(v)) for k, v in value.items()]
        else:
            rows.append((key, _fmt(value)))
    width = max(len(k) for k, _ in rows + [(m, "") for m in metrics])
    lines.append("protocol")
    lines += [f"  {k:<{width}}  {v}" for k, v in rows]
    lines.append("results")
    for key in metrics:
        if key in summary:
            unit = " %" if key.startswith("auc@") or key == "precision" else ""
            lines.append(f"  {key:<{width}}  {_fmt(summary[key], metric=True)}{unit}")
    return "\n".join(lines)
