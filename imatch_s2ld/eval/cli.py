"""``imatch evaluate`` / ``scripts/evaluate.py``: relative-pose evaluation of a matcher on a dataset.

A thin CLI over :func:`imatch_s2ld.eval.evaluate` (:mod:`.pipeline`); it prints the summary table.

Example::

    imatch evaluate --dataset pairs --pairs FILE --images DIR --matcher sift --out OUT
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from ..cli import ArgumentParser, add_matcher_arguments, run_command
from ..data.datasets import DATASETS
from ..errors import InputError
from ..geometry.estimate import ESTIMATORS
from ..matchers import parse_matcher_options
from .pipeline import evaluate
from .report import format_summary

__all__ = ["build_parser", "main"]


def build_parser(prog: str = "imatch evaluate") -> argparse.ArgumentParser:
    """The CLI options (see module docstring)."""
    p = ArgumentParser(prog=prog, description="Relative-pose evaluation of a matcher.")
    p.add_argument("--dataset", default="pairs",
                   help=f"one of {', '.join(DATASETS)} (default: pairs)")
    p.add_argument("--pairs", help="pairs: pairs_with_gt.txt file")
    p.add_argument("--images", help="pairs/colmap: images directory")
    p.add_argument("--data", help="synthetic: pairs file or directory of pairs_with_gt.txt")
    p.add_argument("--model", help="colmap: COLMAP model directory (text or binary)")
    p.add_argument("--root", help="megadepth1500/scannet1500: image root")
    p.add_argument("--index", help="megadepth1500/scannet1500: index directory")
    add_matcher_arguments(p, "sift", "; stored in summary.json's protocol.matcher_conf")
    p.add_argument("--resize", default=None, help="none, longer side (int) or WxH (default none)")
    p.add_argument("--estimator", default="ransac", help=f"one of {', '.join(ESTIMATORS)}")
    p.add_argument("--threshold", type=float, default=None,
                   help="inlier threshold in px (default 0.5 for ransac, 1.0 otherwise)")
    p.add_argument("--confidence", type=float, default=0.99999, help="RANSAC confidence")
    p.add_argument("--max-iters", type=int, default=1000,
                   help="RANSAC iteration cap (default 1000: OpenCV's, as SuperGlue/LoFTR)")
    p.add_argument("--max-pairs", type=int, default=None, help="evaluate only the first N pairs")
    p.add_argument("--min-covisible", type=int, default=100,
                   help="colmap: min shared 3D points per pair")
    p.add_argument("--max-angle", type=float, default=45.0, dest="max_angle_deg",
                   help="colmap without 3D points: max optical-axis angle (degrees)")
    p.add_argument("--viz", type=int, default=3, help="match visualisations to write (default 3)")
    p.add_argument("--overwrite", action="store_true", help="recompute cached predictions")
    p.add_argument("--no-progress", action="store_false", dest="progress",
                   help="hide the progress bar")
    p.add_argument("--out", required=True, help="output directory")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit code (2 on :class:`InputError`)."""
    return run_command("imatch evaluate", build_parser(), argv, _run)


def _run(args: argparse.Namespace) -> int:
    if args.dataset not in DATASETS:
        raise InputError(f"--dataset: unknown dataset {args.dataset!r}; choose one of {', '.join(DATASETS)}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    conf = vars(args)
    conf["matcher_conf"] = parse_matcher_options(conf.pop("matcher_opt"))
    summary = evaluate(conf)
    print(format_summary(summary))
    print(f"wrote {Path(args.out) / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
