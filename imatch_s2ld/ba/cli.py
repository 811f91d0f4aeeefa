"""``imatch ba``: solve a saved bundle-adjustment problem (``.npz``, :meth:`BundleProblem.save`) or a
synthetic one, print a summary, optionally write the result.

    imatch ba ba/problems/window_000123.npz --backend ceres --robust-kernel cauchy
    imatch ba --synthetic 10x2000 --save-problem ba/problems/synthetic_10x2000.npz --out ba/results/r.npz
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..cli import ArgumentParser, run_command
from ..errors import InputError
from ..io import atomic_path
from .config import BACKENDS
from .problem import BAResult, BundleProblem
from .robust import KERNELS
from .solve import solve
from .synthetic import make_synthetic_problem, pose_errors


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="imatch ba", description="Solve a bundle-adjustment problem.")
    p.add_argument("problem", nargs="?", type=Path, help="problem file (.npz) written by BundleProblem.save")
    p.add_argument("--synthetic", metavar="NxM", help="solve a synthetic problem (N frames, M points)")
    p.add_argument("--seed", type=int, default=0, help="seed of --synthetic (default 0)")
    p.add_argument("--save-problem", type=Path, help="write the (synthetic) problem here (.npz)")
    p.add_argument("--backend", choices=BACKENDS, default="schur")
    p.add_argument("--robust-kernel", choices=KERNELS, default="none")
    p.add_argument("--robust-scale", type=float, default=1.0, help="kernel width in pixels (default 1)")
    p.add_argument("--max-iterations", type=int, default=100)
    p.add_argument("--conf", default="{}", help="more solver options, JSON (ba.DEFAULT_CONF keys)")
    p.add_argument("--out", type=Path, help="write poses, points, residuals, inliers and a summary (.npz)")
    return p


def _synthetic_size(text: str) -> tuple[int, int]:
    try:
        n, m = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise InputError(f"--synthetic expects NxM (frames x points), got {text!r}") from None
    if n < 2 or m < 1:
        raise InputError(f"--synthetic needs N >= 2 and M >= 1, got {text!r}")
    return n, m


def _summary(result: BAResult) -> dict:
    return {"backend": result.backend, "success": result.success, "reason": result.reason,
            "iterations": result.iterations, "initial_cost": result.initial_cost,
            "final_cost": result.final_cost, "rms_px": result.rms_px,
            "inliers": int(result.inliers.sum()), "observations": int(result.inliers.numel()),
            "time_s": result.time_s}


def _run(args: argparse.Namespace) -> int:
    if (args.problem is None) == (args.synthetic is None):
        raise InputError("give a problem file or --synthetic NxM (exactly one)")
    try:
        extra = json.loads(args.conf)
    except json.JSONDecodeError as err:
        raise InputError(f"--conf is not JSON: {err}") from None
    if not isinstance(extra, dict):
        raise InputError("--conf must be a JSON object")
    conf = {"backend": args.backend, "robust_kernel": args.robust_kernel,
            "robust_scale_px": args.robust_scale, "max_iterations": args.max_iterations, **extra}
    gt = None
    if args.synthetic:
        syn = make_synthetic_problem(*_synthetic_size(args.synthetic), seed=args.seed)
        problem, gt = syn.problem, syn.gt_poses
    else:
        problem = BundleProblem.load(args.problem)
    if args.save_problem:
        problem.save(args.save_problem)
    result = solve(problem, conf)
    summary = _summary(result)
    print(f"{problem.num_frames} frames, {problem.num_points} points, "
          f"{problem.num_observations} observations")
    print(f"{result.backend}: {'ok' if result.success else 'FAILED'} ({result.reason}); "
          f"{result.iterations} iterations, cost {result.initial_cost:.6g} -> {result.final_cost:.6g}, "
          f"RMS {result.rms_px:.4f} px, {summary['inliers']}/{summary['observations']} inliers, "
          f"{result.time_s:.3f} s")
    if gt is not None:
        rot, trans = pose_errors(result.poses, gt)
        print(f"vs ground truth: rotation {rot:.4f} deg, camera centre {trans:.4f} baselines (mean)")
    if args.out:
        with atomic_path(args.out, suffix=".npz") as tmp, open(tmp, "wb") as fh:
            names = ("poses", "points", "residuals", "inliers")
            arrays = {k: getattr(result, k).cpu().numpy() for k in names}
            np.savez_compressed(fh, **arrays, summary=json.dumps(summary))
        print(f"wrote {args.out}")
    return 0 if result.success else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``imatch ba``: 0 solved, 1 the solve failed (reason printed), 2 bad input."""
    return run_command("imatch ba", build_parser(), argv, _run)
