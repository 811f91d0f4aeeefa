"""Fine-tuning outputs: ``report.json`` / ``report.md``, ``training.png``, before/after match pictures.

``report.json``::

    {"before": <evaluation summary.json of the starting matcher> | null,
     "after":  <evaluation summary.json of the fine-tuned matcher> | null,   # same keys
     "gain": {"auc@5": relative gain, ...} | null,
     "baselines": {"sift": <evaluation summary.json>, ...},  # --baselines on the same pairs ({} without)
     "ba_probe": {"before": {...}, "after": {...}, "common": {...}},  # BA on fixed probe windows
     "ba_probe_predictions": {...},  # the same with tracks of S2LD's output matches
     "self_check": {"before": {auc@5/10/20, ...}, "after": {...}, "gain": {...},
                    "reference": <geometry source of its pseudo ground truth>} | null,  # no labels
     "track_check": {"before": {rms_px, median_px, tracks, ...}, "after": {...}, "common": {...}} | null,
     "finetune": {steps, windows, skipped_windows, skip_ratio, loss_first/last, ...},
     "validation": [{"step", "self_check/auc@10", "eval/auc@10", ...}, ...],  # eval.every rows
     "best": {"metric", "step", "value", "path": "OUT/best.pt"} | null,
     "intrinsics": {...}, "checkpoint": "OUT/model.pt", ...}
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..eval.report import write_json
from ..eval.viz import draw_matches
from ..models.s2ld import S2LD
from .data import VideoWindows
from .geometry import reference_source
from .results import FinetuneResult, ProbeBA

__all__ = [
    "SUMMARY_KEYS",
    "best_metric",
    "draw_video_pairs",
    "probe_common",
    "stack_pictures",
    "training_statistics",
    "write_report",
]

logger = logging.getLogger(__name__)

SUMMARY_KEYS = (
    "auc@5",
    "auc@10",
    "auc@20",
    "precision",
    "median_matches",
    "runtime_s_per_pair",
    "num_pairs",
    "num_failures",
)


def _mean(rows: Sequence[Mapping[str, Any]], key: str) -> float | None:
    vals = [float(r[key]) for r in rows if r.get(key) is not None and np.isfinite(float(r[key]))]
    return float(np.mean(vals)) if vals else None


def training_statistics(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Steps, skipped windows, and first-vs-last-fifth means of the loss and BA statistics."""
    n = len(rows)
    k = max(1, n // 5)
    first, last = rows[:k], rows[-k:]
    stats: dict[str, Any] = {
        "steps": int(rows[-1]["step"]) if rows else 0,
        "skip_ratio": _mean(rows, "skipped"),
        "tracks_per_window": _mean(rows, "num_tracks"),
        "points_per_window": _mean(rows, "num_points"),
        "inlier_ratio": _mean(rows, "inlier_ratio"),
        "supervised_matches_per_window": _mean(rows, "tracked_s2ld_matches"),
        "seconds_per_step_match": _mean(rows, "time_match_s"),
        "seconds_per_step_ba": _mean(rows, "time_ba_s"),
    }
    for key in ("loss", "reprojection", "triangulation", "reproj_px", "ba_rms_init_px", "ba_rms_px",
                "s2ld_matches", "num_tracks"):
        stats[f"{key}_first"] = _mean(first, key)
        stats[f"{key}_last"] = _mean(last, key)
    stats["collapse"] = collapsed(stats["s2ld_matches_first"], stats["s2ld_matches_last"])
    return stats


#: S2LD matches per window in the last fifth of the steps outside [1/2, 2] x the first fifth's: collapse
COLLAPSE_FACTOR = 2.0


def collapsed(first: float | None, last: float | None) -> bool | None:
    """Whether the matches per window moved by more than :data:`COLLAPSE_FACTOR` either way during
    training (None when they were not logged: a source without ``matcher`` and no matching term)."""
    if first is None or last is None or first <= 0:
        return None
    return not (1 / COLLAPSE_FACTOR <= last / first <= COLLAPSE_FACTOR)


def relative_gain(
    before: Mapping[str, Any] | None, after: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """``(after - before) / before`` of AUC@5/10/20 (None where before is 0; None without both)."""
    if not before or not after:
        return None
    return {
        k: (after[k] - before[k]) / before[k] if before[k] else None for k in ("auc@5", "auc@10", "auc@20")
    }


# ------------------------------------------------------------------------------------- pictures
def draw_video_pairs(
    net: S2LD, windows: VideoWindows, indices: Sequence[int], K: np.ndarray, folder: Path, label: str
) -> list[Path]:
    """Match the first and last frame of the windows ``indices`` and draw them; a match is green when it
    is an inlier of an essential matrix fitted by RANSAC (1 px), red otherwise (no ground truth here)."""
    paths = []
    for index in indices:
        f0, f1 = windows.frames(index)[0], windows.frames(index)[-1]
        im0, im1 = windows.video.frame_rgb(f0), windows.video.frame_rgb(f1)
        k0, k1, _ = net.match(im0, im1)
        ok = np.zeros(len(k0), dtype=bool)
        if len(k0) >= 5:
            _, mask = cv2.findEssentialMat(
                k0.astype(np.float64), k1.astype(np.float64), K, cv2.RANSAC, 0.9999, 1.0
            )
            if mask is not None:
                ok = mask.ravel().astype(bool)
        text = f"{label}: {len(k0)} matches, {int(ok.sum())} essential-matrix inliers (1 px)"
        paths.append(draw_matches(im0, im1, k0, k1, ok, folder / f"window_{index:05d}.png", text))
    return paths


def stack_pictures(top: Path, bottom: Path, path: Path) -> Path:
    """Stack two pictures vertically (before above after)."""
    a, b = cv2.imread(str(top)), cv2.imread(str(bottom))
    w = max(a.shape[1], b.shape[1])
    pad = [
        cv2.copyMakeBorder(x, 0, 8, 0, w - x.shape[1], cv2.BORDER_CONSTANT, value=(255, 255, 255))
        for x in (a, b)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.vstack(pad))
    return path


def _before_after_pictures(out: Path) -> list[Path]:
    pictures = []
    for kind in ("eval", "video"):
        bdir, adir = out / kind / "before" / "viz", out / kind / "after" / "viz"
        if not bdir.is_dir() or not adir.is_dir():
            continue
        for b in sorted(bdir.glob("*.png")):
            a = adir / b.name
            if a.is_file():
                pictures.append(stack_pictures(b, a, out / "matches" / f"{kind}_{b.name}"))
    return pictures


def plot_training(
    rows: Sequence[Mapping[str, Any]],
    validation: Sequence[Mapping[str, Any]],
    path: Path,
    before: Mapping[str, float | None] | None = None,
    after: Mapping[str, float | None] | None = None,
) -> Path:
    """Loss, BA RMS (initial / after BA) and target distance per step, and AUC@10 over steps.

    ``before`` / ``after``: AUC@10 at the start and the end by series (``eval``: the evaluation pairs,
    ``self_check``); the periodic values come from the ``validation`` rows (``<series>/auc@10``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.array([r["step"] for r in rows], dtype=float)
    before, after = dict(before or {}), dict(after or {})

    def series(key: str) -> np.ndarray:
        return np.array([np.nan if r.get(key) is None else float(r[key]) for r in rows])

    curves = {}
    for name, label in (("eval", "evaluation pairs"), ("self_check", "self-check (no labels)")):
        xs, ys = [], []
        if before.get(name) is not None:
            xs, ys = [0.0], [float(before[name])]
        for v in validation:
            if v.get(f"{name}/auc@10") is not None:
                xs.append(float(v["step"]))
                ys.append(float(v[f"{name}/auc@10"]))
        if after.get(name) is not None and rows and (not xs or xs[-1] != float(rows[-1]["step"])):
            xs.append(float(rows[-1]["step"]))
            ys.append(float(after[name]))
        if xs:
            curves[label] = (xs, ys)
    panels = 4 if curves else 3
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.4))
    axes[0].plot(steps, series("loss"), ".", ms=3, label="loss")
    axes[0].set_title("fine-tuning loss")
    axes[1].plot(steps, series("ba_rms_init_px"), ".", ms=3, label="before BA (init)")
    axes[1].plot(steps, series("ba_rms_px"), ".", ms=3, label="after BA")
    axes[1].set_title("window reprojection RMS (px)")
    axes[1].legend()
    axes[2].plot(steps, series("reproj_px"), ".", ms=3)
    axes[2].set_title("S2LD prediction to BA target (px)")
    if curves:
        for label, (xs, ys) in curves.items():
            axes[3].plot(xs, ys, "o-", label=label)
        axes[3].set_title("relative pose AUC@10 (%)")
        axes[3].legend()
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def best_metric(conf: Mapping[str, Any], with_self_check: bool, with_pairs: bool) -> str | None:
    """``train.best_metric`` resolved: ``auto`` keeps ``best.pt`` by the label-free self-check
    (``self_check/auc@10``; the evaluation pairs stay an unbiased test), else by the evaluation pairs
    (``eval/auc@10``), else none."""
    name = conf["train"]["best_metric"]
    if name != "auto":
        return name
    return "self_check/auc@10" if with_self_check else "eval/auc@10" if with_pairs else None


# --------------------------------------------------------------------------------------- report
def write_report(run: FinetuneResult) -> dict[str, Any]:
    """Write ``report.json``, ``report.md``, ``training.png`` and ``matches/*.png`` into the run's output
    folder; return the JSON (also stored in ``run.report``, the pictures in ``run.pictures``)."""
    inputs, conf, out = run.inputs, run.inputs.conf, run.inputs.out
    tr = run.training.result
    rows, validation = tr.history, tr.validation
    b_eval, a_eval = run.before.eval, run.after.eval
    stats = training_statistics(rows)
    b_sc, a_sc = run.before.self_check, run.after.self_check
    plot = plot_training(rows, validation, out / "training.png",
                         {"eval": b_eval and b_eval["auc@10"], "self_check": b_sc and b_sc["auc@10"]},
                         {"eval": a_eval and a_eval["auc@10"], "self_check": a_sc and a_sc["auc@10"]})
    run.pictures = _before_after_pictures(out)
    reasons = run.training.skip_reasons
    search = run.preflight.focal_search
    report = {
        "before": b_eval,
        "after": a_eval,
        "gain": relative_gain(b_eval, a_eval),
        "baselines": {name: dict(s) for name, s in run.baselines.items()},
        "ba_probe": {
            "before": run.before.probe.summary(),
            "after": run.after.probe.summary(),
            "common": probe_common(run.before.probe, run.after.probe),
        },
        "ba_probe_predictions": {
            "before": run.before.probe_predictions.summary(),
            "after": run.after.probe_predictions.summary(),
            "common": probe_common(run.before.probe_predictions, run.after.probe_predictions),
        },
        "self_check": _self_check(run.before.self_check, run.after.self_check,
                                  reference_source(conf["model"]["geometry_from"])),
        "track_check": _track_check(run.before.track_check, run.after.track_check),
        "finetune": {
            **stats,
            "num_processes": int(tr.num_processes),
            "windows": int(stats["steps"]) * int(tr.num_processes),
            "skipped_windows": sum(reasons.values()),
            "skip_reasons": reasons,
            "window_selection": run.selection.summary(),
            "geometry_from": conf["model"]["geometry_from"],
            "window": dict(conf["window"]),
            "lr": conf["train"]["lr"],
            "max_steps": conf["train"]["max_steps"],
        },
        "validation": validation,
        "best": tr.best,  # the trainer's best.pt (train.best_metric, see best_metric)
        "intrinsics": {
            "source": inputs.intrinsics.source,
            "description": inputs.intrinsics.description,
            "K": np.asarray(run.preflight.K).tolist(),
            "refined": (search or {}).get("factor") is not None,
            "focal_search": search,  # probe.refine_focal: every factor and its cost
        },
        "preflight": {"success": run.preflight.probe.success, "windows": len(run.preflight.probe.windows)},
        "video": conf["video"] if isinstance(conf["video"], list) else str(conf["video"]),
        "init": str(conf["init"] or "shipped default"),
        "checkpoint": str(tr.model_path) if tr.model_path else None,
        "plots": [plot.name],
        "pictures": [str(p.relative_to(out)) for p in run.pictures],
        "seconds": run.seconds,
    }
    write_json(out / "report.json", report)
    (out / "report.md").write_text(_markdown(report))
    if stats["collapse"]:
        logger.warning("S2LD matches per window went from %.0f to %.0f during training: the matcher may be "
                       "collapsing; try a lower train.lr", stats["s2ld_matches_first"],
                       stats["s2ld_matches_last"])
    run.report = report
    return report


def probe_common(before: ProbeBA | None, after: ProbeBA | None) -> dict[str, Any] | None:
    """Mean BA RMS (px) and landmarks over the probe windows reconstructed by **both** matchers (a window
    only one of them reconstructs does not bias the mean), and the strictly like-for-like comparison:
    the RMS and median reprojection error over the observations that are inliers of both BAs (the same
    anchor keypoint in the same frame: ``observations`` of :func:`.probe.probe_ba`); the window means
    also change with the set of landmarks each matcher brings, these do not."""
    if not before or not after:
        return None
    ok_b = {r["window"]: r for r in before.windows if r["success"]}
    ok_a = {r["window"]: r for r in after.windows if r["success"]}
    common = sorted(set(ok_b) & set(ok_a))
    if not common:
        return {"windows": 0, "ba_rms_px_before": None, "ba_rms_px_after": None,
                "num_points_before": None, "num_points_after": None, "observations": 0,
                "obs_rms_px_before": None, "obs_rms_px_after": None, "obs_median_px_before": None,
                "obs_median_px_after": None}

    def mean(rows: Mapping[int, Any], key: str) -> float:
        return float(np.mean([rows[w][key] for w in common]))

    obs = common_observations([[w, *o] for w in common for o in ok_b[w].get("observations", [])],
                              [[w, *o] for w in common for o in ok_a[w].get("observations", [])])
    return {"windows": len(common), "ba_rms_px_before": mean(ok_b, "ba_rms_px"),
            "ba_rms_px_after": mean(ok_a, "ba_rms_px"), "num_points_before": mean(ok_b, "num_points"),
            "num_points_after": mean(ok_a, "num_points")} | obs


#: the same anchor keypoint in two probes: same index and position within this (pixels)
ANCHOR_TOL_PX = 0.5


def common_observations(before: Sequence[Sequence[float]],
                        after: Sequence[Sequence[float]]) -> dict[str, Any]:
    """RMS and median residual of two matchers over the same observations.

    Args:
        before, after: rows ``[window, frame, anchor, x, y, residual_px]``; a row of each is the same
            observation when ``(window, frame, anchor)`` agree and the anchor keypoints ``(x, y)`` lie
            within :data:`ANCHOR_TOL_PX` of each other.
    Returns:
        ``{"observations", "obs_rms_px_before", "obs_rms_px_after", "obs_median_px_before",
        "obs_median_px_after"}`` (None values without a common observation).
    """
    eb = {tuple(int(v) for v in o[:3]): o[3:] for o in before}
    res_b, res_a = [], []
    for o in after:
        key = tuple(int(v) for v in o[:3])
        if key in eb:
            (xb, yb, rb), (xa, ya, ra) = eb[key], o[3:]
            if abs(xb - xa) <= ANCHOR_TOL_PX and abs(yb - ya) <= ANCHOR_TOL_PX:
                res_b.append(rb)
                res_a.append(ra)
    return {"observations": len(res_b), "obs_rms_px_before": _rms(res_b), "obs_rms_px_after": _rms(res_a),
            "obs_median_px_before": float(np.median(res_b)) if res_b else None,
            "obs_median_px_after": float(np.median(res_a)) if res_a else None}


def _rms(values: list[float]) -> float | None:
    return float(np.sqrt(np.mean(np.square(values)))) if values else None


def _videos(video: str | list[str]) -> str:
    if isinstance(video, list) and len(video) > 1:
        return f"{len(video)} videos (" + ", ".join(f"`{v}`" for v in video) + ")"
    return f"Video `{video[0] if isinstance(video, list) else video}`"


def _spacing(value: Any) -> str:
    return ", ".join(str(v) for v in value) if isinstance(value, list | tuple) else str(value)


def _fmt(v: Any, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def _track_check(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The track check (:func:`.selfcheck.track_check`) before and after, and on their common tracks."""
    if not before or not after:
        return None

    def summary(t: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in t.items() if k != "observations"}

    return {"before": summary(before), "after": summary(after),
            "common": common_observations(before["observations"], after["observations"])}


def _self_check(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None,
                reference: str) -> dict[str, Any] | None:
    """The self-check (:mod:`.selfcheck`) before and after with its relative gain and the geometry
    source of its pseudo ground truth (None when off)."""
    if not before or not after:
        return None
    return {"before": dict(before), "after": dict(after), "gain": relative_gain(before, after),
            "reference": reference}


def _collapse_lines(ft: Mapping[str, Any]) -> list[str]:
    if ft.get("collapse") is None:
        return []
    line = (f"S2LD matches per window: {ft['s2ld_matches_first']:.0f} in the first fifth of the steps, "
            f"{ft['s2ld_matches_last']:.0f} in the last.")
    if ft["collapse"]:
        line += (f" **Warning: they changed by more than {COLLAPSE_FACTOR:g}x: the matcher may be "
                 "collapsing; try a lower train.lr.**")
    return [line, ""]


def _periodic_lines(validation: Sequence[Mapping[str, Any]], best: Mapping[str, Any] | None) -> list[str]:
    """The ``eval.every`` rows as a table and the checkpoint kept by the best value."""
    if not validation:
        return []
    cols = [c for c in ("self_check/auc@10", "self_check/median_matches", "eval/auc@5", "eval/auc@10",
                        "eval/auc@20") if any(c in v for v in validation)]
    lines = ["## During training (every `eval.every` steps)", "", "| step | " + " | ".join(cols) + " |",
             "|---|" + "---|" * len(cols)]
    lines += ["| " + " | ".join([str(int(v["step"]))] + [_fmt(v.get(c), ".1f") for c in cols]) + " |"
              for v in validation]
    lines.append("")
    if best:
        lines += [f"Best `{best['metric']}` {best['value']:.1f} at step {best['step']}: `{best['path']}` "
                  "(`model.pt` is the last step).", ""]
    return lines


def _markdown(r: Mapping[str, Any]) -> str:
    ft = r["finetune"]
    lines = [
        "# Self-supervised fine-tuning report",
        "",
        f"{_videos(r['video'])}, start `{r['init']}`, {ft['steps']} steps, geometry from "
        f"`{ft['geometry_from']}`, windows of {ft['window']['length']} frames spaced "
        f"{_spacing(ft['window']['spacing'])}; "
        f"{r['intrinsics']['description']}; whole run {r['seconds']:.0f} s.",
        "",
    ]
    if r["before"] and r["after"]:
        lines += [
            "## Relative pose on the evaluation pairs",
            "",
            "| matcher | AUC@5 | AUC@10 | AUC@20 | precision | median matches | pairs | failures |",
            "|---|---|---|---|---|---|---|---|",
        ]
        rows = [("before (start)", r["before"]), ("after (fine-tuned)", r["after"])]
        rows += [(f"{name} (baseline)", s) for name, s in r.get("baselines", {}).items()]
        for name, s in rows:
            lines.append(
                f"| {name} | {s['auc@5']:.1f} | {s['auc@10']:.1f} | {s['auc@20']:.1f} | "
                f"{s['precision']:.1f} | {s['median_matches']:.0f} | {s['num_pairs']} | "
                f"{s['num_failures']} |"
            )
        g = r["gain"]
        lines += [
            "",
            "Relative gain: "
            + ", ".join(f"{k} {_fmt(None if v is None else 100 * v, '+.0f')}%" for k, v in g.items()),
            "",
        ]
    sc = r.get("self_check")
    if sc:
        b, a = sc["before"], sc["after"]
        lines += [
            "## Self-check on the video (no labels)",
            "",
            f"Relative-pose AUC@5/10/20 on {b['num_pairs']} frame pairs of the video's windows against "
            f"their {sc.get('reference', 'sift')} bundle-adjustment poses (pseudo ground truth; windows "
            "fine-tuning trained on): "
            f"{b['auc@5']:.1f} / {b['auc@10']:.1f} / {b['auc@20']:.1f} before, "
            f"{a['auc@5']:.1f} / {a['auc@10']:.1f} / {a['auc@20']:.1f} after (AUC@10 "
            f"{_fmt(None if sc['gain']['auc@10'] is None else 100 * sc['gain']['auc@10'], '+.0f')}%); "
            f"median matches {b['median_matches']:.0f} -> {a['median_matches']:.0f}.",
            "",
        ]
    lines += _periodic_lines(r.get("validation") or [], r.get("best"))
    tc = r.get("track_check")
    ref = (sc or {}).get("reference", "sift")
    if tc:
        b, a, c = tc["before"], tc["after"], tc["common"]
        lines += [
            f"## Reprojection error of the output tracks at the {ref} BA solution (no labels)",
            "",
            f"Tracks of S2LD's output matches from the first frame of the self-check windows "
            f"({b['windows']}), triangulated with the windows' {ref} BA poses held fixed, tracks with every "
            f"error below 4 px: {b['tracks']} -> {a['tracks']} tracks, RMS {_fmt(b['rms_px'], '.3f')} -> "
            f"{_fmt(a['rms_px'], '.3f')} px, median {_fmt(b['median_px'], '.3f')} -> "
            f"{_fmt(a['median_px'], '.3f')} px; on the {c['observations']} observations of the tracks "
            f"both matchers keep: RMS {_fmt(c['obs_rms_px_before'], '.3f')} -> "
            f"{_fmt(c['obs_rms_px_after'], '.3f')} px, median {_fmt(c['obs_median_px_before'], '.3f')} -> "
            f"{_fmt(c['obs_median_px_after'], '.3f')} px.",
            "",
        ]
    probes = (("ba_probe", "S2LD's own tracks (detected keypoints)"),
              ("ba_probe_predictions", "S2LD's output matches (reference-frame keypoints to their "
                                       "local-dense predictions)"))
    for key, title in probes:
        probe = r.get(key) or {}
        pb, pa = probe.get("before"), probe.get("after")
        if not (pb and pa):
            continue
        lines += [
            f"## Bundle adjustment of {title} on fixed probe windows",
            "",
            "| matcher | windows reconstructed | RMS before BA (px) | RMS after BA (px) | landmarks "
            "| inliers |",
            "|---|---|---|---|---|---|",
        ]
        for name, p in (("before", pb), ("after", pa)):
            lines.append(
                f"| {name} | {p['success']}/{p['windows']} | {_fmt(p['ba_rms_init_px'], '.3f')} | "
                f"{_fmt(p['ba_rms_px'], '.3f')} | {_fmt(p['num_points'], '.0f')} | "
                f"{_fmt(None if p['inlier_ratio'] is None else 100 * p['inlier_ratio'])}% |"
            )
        c = probe.get("common")
        if c and c["windows"]:
            lines.append("")
            lines.append(
                f"On the {c['windows']} windows both matchers reconstruct: RMS after BA "
                f"{_fmt(c['ba_rms_px_before'], '.3f')} -> {_fmt(c['ba_rms_px_after'], '.3f')} px, landmarks "
                f"{_fmt(c['num_points_before'], '.0f')} -> {_fmt(c['num_points_after'], '.0f')}."
            )
            if c.get("observations"):
                lines.append(
                    f"On the {c['observations']} observations that are inliers of both (the same keypoint "
                    f"in the same frame): reprojection error RMS {_fmt(c['obs_rms_px_before'], '.3f')} -> "
                    f"{_fmt(c['obs_rms_px_after'], '.3f')} px, median "
                    f"{_fmt(c['obs_median_px_before'], '.3f')} -> {_fmt(c['obs_median_px_after'], '.3f')} px."
                )
        lines.append("")
    lines += [
        "## Training",
        "",
        f"Skipped windows: {ft['skipped_windows']} of {ft['windows']}"
        + (
            " (" + "; ".join(f"{n}x {k}" for k, n in ft["skip_reasons"].items()) + "). "
            if ft["skip_reasons"]
            else ". "
        )
        + f"Per window: {_fmt(ft['tracks_per_window'], '.0f')} tracks, "
        f"{_fmt(ft['points_per_window'], '.0f')} "
        f"landmarks, {_fmt(ft['supervised_matches_per_window'], '.0f')} supervised S2LD matches.",
        "",
        *_collapse_lines(ft),
        "| first / last fifth of the steps | loss | target distance (px) | RMS before BA | RMS after BA |",
        "|---|---|---|---|---|",
        f"| first | {_fmt(ft['loss_first'], '.3f')} | {_fmt(ft['reproj_px_first'], '.3f')} | "
        f"{_fmt(ft['ba_rms_init_px_first'], '.3f')} | {_fmt(ft['ba_rms_px_first'], '.3f')} |",
        f"| last | {_fmt(ft['loss_last'], '.3f')} | {_fmt(ft['reproj_px_last'], '.3f')} | "
        f"{_fmt(ft['ba_rms_init_px_last'], '.3f')} | {_fmt(ft['ba_rms_px_last'], '.3f')} |",
        "",
        "![training](training.png)",
        "",
    ]
    if r["pictures"]:
        lines += ["## Matches before (top) and after (bottom)", ""]
        lines += [f"![{Path(p).stem}]({p})" for p in r["pictures"]]
    lines.append(f"\nFine-tuned checkpoint: `{r['checkpoint']}` (use with `--matcher s2ld:PATH`).")
    return "\n".join(lines) + "\n"
