"""``scripts/finetune_unlabeled.py`` / ``imatch finetune``: self-supervised fine-tuning on a video.

    python scripts/finetune_unlabeled.py --video DIR [--intrinsics FILE] [--init CKPT]
        [--eval-pairs FILE --eval-images DIR [--baselines sift,aliked+lightglue]] [--steps N] --out OUT

Multi-GPU / multi-node: ``accelerate launch scripts/finetune_unlabeled.py ...`` (or ``torchrun``).
Anything else of :data:`imatch_s2ld.finetune.run.DEFAULT_CONF` is a dotted override, e.g.
``model.loss.triangulation_weight=0.2 train.save_every=5``. Exit codes: 0 done, 2 bad input,
130/143 interrupted (a checkpoint was saved; continue with ``--resume``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from ..cli import ArgumentParser, run_command
from ..train.config import build_config
from ..train.trainer import TrainingInterrupted
from .geometry import source_argument, source_help
from .implicit import BA_GRAD_MODES

__all__ = ["build_parser", "main"]


def build_parser(prog: str = "finetune_unlabeled.py") -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog=prog,
        description="Self-supervised fine-tuning of S2LD on an unlabeled video "
        "(iMatching: matches -> tracks -> bundle adjustment -> reprojection loss).",
        epilog="Every option and its default, commented: configs/finetune_default.yaml (copy it and pass "
        "--config, or override single keys: model.loss.track_weight=1 train.save_every=5). "
        "Measurements behind the defaults: docs/finetuning.md.",
    )
    p.add_argument(
        "--video", required=True, action="append",
        help="folder of frames (jpg/png, natural order) or a video file; repeat it for several videos of "
        "one camera (windows stay inside each video)",
    )
    p.add_argument("--out", required=True, help="output folder (checkpoints, report, plots)")
    p.add_argument(
        "--intrinsics", help="3x3 text file, COLMAP cameras.txt or JSON (default: EXIF, then a prior)"
    )
    p.add_argument(
        "--refine-focal",
        action="store_true",
        help="with the prior intrinsics: choose the focal length by BA cost on probe windows",
    )
    p.add_argument("--init", help="starting S2LD checkpoint (default: the shipped one)")
    p.add_argument("--stride", type=int, help="keep every N-th frame")
    p.add_argument("--max-frames", type=int, help="use at most N frames")
    p.add_argument("--resize", help="longer side in pixels or WxH")
    p.add_argument("--steps", type=int, help="optimizer steps (train.max_steps)")
    p.add_argument("--lr", type=float, help="learning rate (train.lr)")
    p.add_argument("--window-length", type=int, help="frames per window (window.length)")
    p.add_argument(
        "--window-spacing",
        help="frame step inside a window, or several comma-separated (windows of several baselines; "
        "window.spacing)",
    )
    p.add_argument(
        "--geometry-from",
        type=source_argument,
        metavar="SOURCE",
        help=f"where the window poses come from (model.geometry_from): {source_help()}",
    )
    p.add_argument("--color", action="store_const", const=True,
                   help="S2LD reads the frames in colour (color; default: the checkpoint's input, gray "
                   "for the shipped one)")
    p.add_argument(
        "--ba-grad",
        choices=BA_GRAD_MODES,
        help="reprojection-term gradient w.r.t. the BA solution: fixed optimum or implicit "
        "(Theseus re-solve, implicit differentiation; needs model.loss.reprojection_weight > 0)",
    )
    p.add_argument("--eval-pairs", help="pairs_with_gt.txt or a COLMAP model folder: AUC before/after")
    p.add_argument("--eval-images", help="images of --eval-pairs (default: next to it)")
    p.add_argument("--eval-max-pairs", type=int, help="evaluate only the first N pairs")
    p.add_argument("--eval-every", type=int,
                   help="every N steps: the label-free self-check (and --eval-pairs); best.pt by it "
                        "(eval.every)")
    p.add_argument(
        "--baselines",
        help="comma-separated matchers also evaluated on --eval-pairs and reported beside before/after, "
        "e.g. sift,aliked+lightglue",
    )
    p.add_argument("--seed", type=int, help="random seed (train.seed)")
    p.add_argument("--cpu", action="store_true", help="run on the CPU even if a GPU is present")
    p.add_argument("--resume", action="store_true", help="continue OUT/checkpoints/last.pt")
    p.add_argument("--overwrite", action="store_true", help="start over in an OUT that holds a run")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--config", help="YAML file of options (configs/finetune_default.yaml lists them all)")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")
    return p


def conf_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The run configuration: defaults <- ``--config`` <- options <- dotted overrides."""
    from .inputs import baseline_names, window_spacings
    from .run import DEFAULT_CONF

    options: dict[str, Any] = {
        "video": args.video[0] if len(args.video) == 1 else list(args.video),
        "out": args.out,
        "intrinsics": args.intrinsics,
        "init": args.init,
        "stride": args.stride,
        "max_frames": args.max_frames,
        "resize": args.resize,
    }
    if args.refine_focal:
        options["refine_focal"] = True
    if args.color:
        options["color"] = True
    window = {
        k: v
        for k, v in (
            ("length", args.window_length),
            ("spacing", None if args.window_spacing is None else window_spacings(args.window_spacing)),
        )
        if v is not None
    }
    train = {
        k: v for k, v in (("max_steps", args.steps), ("lr", args.lr), ("seed", args.seed)) if v is not None
    }
    train.update({k: True for k in ("cpu", "resume", "overwrite") if getattr(args, k)})
    if args.no_progress:
        train["progress"] = False
    ev = {
        k: v
        for k, v in (
            ("pairs", args.eval_pairs),
            ("images", args.eval_images),
            ("max_pairs", args.eval_max_pairs),
            ("every", args.eval_every),
            ("baselines", None if args.baselines is None else baseline_names(args.baselines)),
        )
        if v is not None
    }
    layered = {
        **{k: v for k, v in options.items() if v is not None},
        "window": window,
        "train": train,
        "eval": ev,
    }
    if args.geometry_from is not None:
        layered["model"] = {"geometry_from": args.geometry_from}
    if args.ba_grad is not None:
        layered.setdefault("model", {})["loss"] = {"ba_grad": args.ba_grad}
    conf = build_config(DEFAULT_CONF, args.config, layered)
    return build_config(conf, None, list(args.overrides))


def _run(args: argparse.Namespace, rank: int) -> int:
    from .run import main as run_main

    conf = conf_from_args(args)
    try:
        result = run_main(conf)
    except TrainingInterrupted as err:
        print(f"finetune: {err}", file=sys.stderr, flush=True)
        return err.exit_code
    except KeyboardInterrupt:
        print("finetune: interrupted (nothing saved)", file=sys.stderr, flush=True)
        return 130
    report = result.report if result is not None else {}
    if rank == 0 and not report:
        print(f"stopped early: continue with --resume (checkpoint in {conf['out']}/checkpoints)")
    elif rank == 0:
        b, a = report["before"], report["after"]
        if b and a:
            print(
                "AUC@5/10/20 before: {:.1f}/{:.1f}/{:.1f}  after: {:.1f}/{:.1f}/{:.1f}".format(
                    b["auc@5"], b["auc@10"], b["auc@20"], a["auc@5"], a["auc@10"], a["auc@20"]
                )
            )
        for name, s in report.get("baselines", {}).items():
            print(f"AUC@5/10/20 {name} (baseline): {s['auc@5']:.1f}/{s['auc@10']:.1f}/{s['auc@20']:.1f}")
        sc = report.get("self_check")
        if sc:
            print("self-check on the video (no labels; AUC@5/10/20 against {} BA poses, {} pairs): "
                  "{:.1f}/{:.1f}/{:.1f} -> {:.1f}/{:.1f}/{:.1f}".format(
                      sc["reference"], sc["before"]["num_pairs"],
                      *(sc[stage][k] for stage in ("before", "after")
                        for k in ("auc@5", "auc@10", "auc@20"))))
        tc = report.get("track_check")
        if tc and tc["common"]["observations"]:
            c = tc["common"]
            ref = (sc or {}).get("reference", "sift")
            print(f"output tracks at the {ref} BA poses (no labels; {c['observations']} common "
                  "observations): "
                  f"reprojection RMS {c['obs_rms_px_before']:.3f} -> {c['obs_rms_px_after']:.3f} px, median "
                  f"{c['obs_median_px_before']:.3f} -> {c['obs_median_px_after']:.3f} px")
        for key, what in (("ba_probe", "detected keypoints"), ("ba_probe_predictions", "output matches")):
            pb, pa = (report.get(key) or {}).get("before"), (report.get(key) or {}).get("after")
            if pb and pa and pb["ba_rms_px"] is not None and pa["ba_rms_px"] is not None:
                print(
                    f"BA RMS on {pb['windows']} probe windows ({what}): {pb['ba_rms_px']:.3f} px -> "
                    f"{pa['ba_rms_px']:.3f} px ({pb['success']} -> {pa['success']} reconstructed)"
                )
            c = (report.get(key) or {}).get("common") or {}
            if c.get("observations"):
                print(f"  same {c['observations']} inlier observations in both: RMS "
                      f"{c['obs_rms_px_before']:.3f} -> {c['obs_rms_px_after']:.3f} px, median "
                      f"{c['obs_median_px_before']:.3f} -> {c['obs_median_px_after']:.3f} px")
        print(f"wrote {conf['out']}/report.md, report.json and the checkpoint {report['checkpoint']}")
    return 0


def main(argv: Sequence[str] | None = None, prog: str = "finetune_unlabeled.py") -> int:
    """Command-line entry point; returns the exit code."""
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("imatch_s2ld.finetune.model",):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return run_command(prog, build_parser(prog), argv, lambda args: _run(args, rank), intermixed=True)


if __name__ == "__main__":
    sys.exit(main())
