"""The main job on the embedded default: render the synthetic default scenes, evaluate the
shipped S2LD checkpoint and the baseline matchers on them, and write a report.

    imatch demo --out outputs/demo

Steps (each an importable function): :func:`imatch_s2ld.synthetic.generate` writes the scenes
into ``OUT/data``; :func:`imatch_s2ld.eval.evaluate` scores every matcher on two splits
(``wide-baseline``: the MegaDepth-layout pairs; ``held-out``: the video scenes' evaluation
pairs) into ``OUT/eval/<split>/<matcher>/``; :func:`write_report` writes ``OUT/report.md``,
``OUT/report.json`` and ``OUT/auc_<split>.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InputError

#: split name -> pairs sub-folder of the generated data (searched for pairs_with_gt.txt files).
SPLITS = {"wide-baseline": "Undistorted_SfM", "held-out": "video"}
SUMMARY_KEYS = ("auc@5", "auc@10", "auc@20", "precision", "median_matches", "runtime_s_per_pair",
                "num_pairs", "num_failures")
TABLE_HEADER = ("| matcher | AUC@5 | AUC@10 | AUC@20 | precision | median matches | s/pair | pairs "
                "| failures |")


@dataclass(frozen=True)
class DemoConfig:
    """Settings of the main job. ``matchers`` are :func:`imatch_s2ld.load_matcher` names."""

    out: str = "outputs/demo"
    preset: str = "default"
    seed: int = 0
    matchers: tuple[str, ...] = ("s2ld", "sift", "orb")
    estimator: str = "ransac"
    threshold: float | None = None
    progress: bool = True
    #: :class:`imatch_s2ld.synthetic.GeneratorConfig` fields overriding the preset (e.g. ``views``).
    overrides: tuple[tuple[str, Any], ...] = ()


def run(conf: DemoConfig) -> dict[str, Any]:
    """Generate, evaluate and report; returns the report content (also in ``report.json``)."""
    from .eval import evaluate
    from .matchers import load_matcher
    from .synthetic import generate

    for name in conf.matchers:  # fail on a bad name before minutes of work
        load_matcher(name)
    out = Path(conf.out)
    start = time.perf_counter()
    print(f"[1/3] rendering synthetic preset {conf.preset!r} (seed {conf.seed}) into {out / 'data'}")
    data = generate(conf.preset, out / "data", seed=conf.seed, progress=conf.progress,
                    **dict(conf.overrides))
    results: dict[str, dict[str, dict[str, Any]]] = {}
    step = 2
    for split, folder in SPLITS.items():
        for matcher in conf.matchers:
            print(f"[{step}/3] evaluating {matcher} on the {split} pairs")
            summary = evaluate({
                "dataset": "synthetic", "data": str(out / "data" / folder), "matcher": matcher,
                "estimator": conf.estimator, "threshold": conf.threshold, "progress": conf.progress,
                "out": str(out / "eval" / split / _slug(matcher)),
            })
            results.setdefault(split, {})[matcher] = summary
        step = 3
    report = write_report(out, conf, results, data.render_rate, time.perf_counter() - start)
    print(f"[3/3] wrote {out / 'report.md'} and {out / 'report.json'}")
    return report


def write_report(
    out: Path, conf: DemoConfig, results: dict[str, dict[str, dict[str, Any]]],
    render_rate: float, seconds: float,
) -> dict[str, Any]:
    """Write ``report.md``, ``report.json`` and one AUC-curve plot per split; return the JSON."""
    from .eval.viz import plot_auc_curve

    protocol = next(iter(next(iter(results.values())).values()))["protocol"]
    lines = [
        "# imatch_s2ld demo: matchers on the synthetic default scenes", "",
        f"Preset `{conf.preset}`, seed {conf.seed}, rendered at {render_rate:.1f} views/s; "
        f"whole run {seconds:.0f} s.", "",
        f"Pose estimator: {protocol['estimator_description']}; pose error = max(rotation, "
        "translation-direction angle); AUC in percent (SuperGlue/LoFTR protocol); precision = "
        f"matches with squared symmetric epipolar distance < {protocol['epipolar_threshold']:g} "
        "(normalized coordinates), percent.", "",
    ]
    for split, per_matcher in results.items():
        lines += [f"## {split} pairs", "", TABLE_HEADER, "|---" * 9 + "|"]
        curves = {}
        for matcher, s in per_matcher.items():
            lines.append(
                f"| {matcher} | {s['auc@5']:.1f} | {s['auc@10']:.1f} | {s['auc@20']:.1f} | "
                f"{s['precision']:.1f} | {s['median_matches']:.0f} | {s['runtime_s_per_pair']:.3f} | "
                f"{s['num_pairs']} | {s['num_failures']} |")
            rows = json.loads((out / "eval" / split / _slug(matcher) / "results.json").read_text())
            curves[matcher] = [r["err_pose"] if r["err_pose"] is not None else float("inf") for r in rows]
        plot = plot_auc_curve(curves, out / f"auc_{split}.png", 20.0, title=f"{split} pairs")
        lines += ["", f"![cumulative pose error]({plot.name})  Per-pair results and match pictures: "
                  f"`eval/{split}/<matcher>/` (`results.csv`, `viz/`).", ""]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    report = {
        "preset": conf.preset, "seed": conf.seed, "render_rate_views_per_s": render_rate,
        "seconds": seconds, "protocol": protocol,
        "results": {split: {m: {k: s[k] for k in SUMMARY_KEYS} for m, s in per.items()}
                    for split, per in results.items()},
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _slug(matcher: str) -> str:
    return matcher.replace(":", "_").replace("/", "_")


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``imatch demo [--out DIR] [--preset NAME] [--seed N] [--matchers s2ld,sift,orb]``."""
    p = argparse.ArgumentParser(prog="imatch demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=DemoConfig.out, help="output directory (default outputs/demo)")
    p.add_argument("--preset", default=DemoConfig.preset, help="synthetic preset (default: default)")
    p.add_argument("--seed", type=int, default=DemoConfig.seed)
    p.add_argument("--matchers", default=",".join(DemoConfig.matchers),
                   help="comma-separated matcher names (default s2ld,sift,orb)")
    p.add_argument("--estimator", default=DemoConfig.estimator, help="ransac, magsac or pycolmap")
    p.add_argument("--threshold", type=float, default=None, help="inlier threshold in pixels")
    p.add_argument("--no-progress", action="store_false", dest="progress")
    args = p.parse_args(argv)
    conf = DemoConfig(args.out, args.preset, args.seed, tuple(m for m in args.matchers.split(",") if m),
                      args.estimator, args.threshold, args.progress)
    try:
        run(conf)
    except InputError as err:
        print(f"imatch demo: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
