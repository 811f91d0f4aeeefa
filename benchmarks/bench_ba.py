"""Bundle adjustment: this package's Schur LM vs Ceres (pycolmap), PyPose dense LM and theseus.

Problems (``imatch_s2ld.ba.make_synthetic_problem``, identical for every backend): N cameras on a
trajectory, M points, 0.5 px noise, initial poses perturbed by about 2 degrees and 5% of the baseline,
points by 5% of the baseline; frame 0 fixed. Sizes (N, M) = (5, 500), (10, 2000), (20, 5000), (50, 20000).

Every (backend, size) runs in its own fresh subprocess (``--worker``): it builds the problem, warms the
backend up on a tiny problem, then times ``solve`` ``--runs`` times (median). Peak memory = peak RSS
during the solves minus the RSS before them (``benchmarks/peak_rss.py``). All backends get the same
options (Ceres' defaults: function tolerance 1e-6, gradient 1e-10, parameter 1e-8, at most 100
iterations, no robust kernel) and the same ``--threads`` (torch threads; Ceres' thread count).

Targets (2 CPU cores): final RMS within 1% of Ceres on every size; time <= 3x Ceres at (10, 2000) and
(20, 5000); >= 100x faster than PyPose dense LM at (5, 500); (50, 20000) within 2 GiB.

PyPose dense LM runs only where its estimated memory fits (--dense-max-mb); theseus only if installed.
Results: printed table + ratios, JSON in ``ba/results/bench_ba.json`` (``--json``).

Usage: ``python benchmarks/bench_ba.py [--sizes 5x500,10x2000,...] [--backends schur,ceres,...]
[--runs 3] [--threads 2] [--json PATH]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from peak_rss import PeakRSS, status_kb  # benchmarks/peak_rss.py (this script's folder)

SIZES = ((5, 500), (10, 2000), (20, 5000), (50, 20000))
BACKENDS = ("schur", "ceres", "pypose_dense", "theseus")
BASELINE = "ceres"
TARGET_RMS_REL = 0.01
TARGET_TIME = {(10, 2000): 3.0, (20, 5000): 3.0}
TARGET_DENSE_SPEEDUP = (100.0, (5, 500))
TARGET_MEMORY_MB = (2048.0, (50, 20000))
RESULT_PREFIX = "RESULT "
ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------- worker
def serve(args: argparse.Namespace) -> None:
    """Worker: solve one (backend, size) ``--runs`` times, print one ``RESULT`` JSON line."""
    import gc

    import torch

    from imatch_s2ld.ba import make_synthetic_problem, pose_errors, solve

    torch.set_num_threads(args.threads)
    N, M = args.worker_size
    conf = {"backend": args.worker}
    syn = make_synthetic_problem(N, M, noise_px=0.5, rot_noise_deg=2.0, trans_noise_frac=0.05, seed=args.seed)
    solve(make_synthetic_problem(3, 60, seed=1).problem, conf)  # warm-up (imports, first-call overheads)
    gc.collect()
    baseline_kb = status_kb("VmRSS")
    times, result = [], None
    with PeakRSS() as peak:
        for _ in range(args.runs):
            t0 = time.perf_counter()
            result = solve(syn.problem, conf)
            times.append(time.perf_counter() - t0)
    assert result is not None
    rot, trans = pose_errors(result.poses, syn.gt_poses)
    init_rot, init_trans = pose_errors(syn.problem.pose_matrices(), syn.gt_poses)
    out = {
        "backend": args.worker, "N": N, "M": M, "observations": syn.problem.num_observations,
        "time_s": statistics.median(times), "times_s": times, "iterations": result.iterations,
        "rms_px": result.rms_px, "success": result.success, "reason": result.reason,
        "rot_err_deg": rot, "trans_err": trans, "init_rot_err_deg": init_rot, "init_trans_err": init_trans,
        "peak_mb": (peak.peak_kb - baseline_kb) / 1024, "memory_method": peak.method,
        "threads": torch.get_num_threads(),
    }
    print(RESULT_PREFIX + json.dumps(out), flush=True)


# ---------------------------------------------------------------------------- parent
def run_worker(args: argparse.Namespace, backend: str, size: tuple[int, int]) -> dict[str, Any]:
    """One fresh subprocess; a failure or timeout becomes ``{"error": ...}``."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--worker", backend, "--worker-size",
            f"{size[0]}x{size[1]}", "--runs", str(args.runs), "--threads", str(args.threads),
            "--seed", str(args.seed)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"backend": backend, "N": size[0], "M": size[1],
                "error": f"timeout after {args.timeout:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
    return {"backend": backend, "N": size[0], "M": size[1], "error": tail[:200]}


def dense_mb(N: int, M: int, seed: int) -> float:
    """Estimated peak memory of PyPose's dense LM (Jacobian + autograd intermediates) at this size."""
    from imatch_s2ld.ba import make_synthetic_problem
    from imatch_s2ld.ba.backends.pypose_dense import dense_bytes

    O = make_synthetic_problem(N, M, seed=seed).problem.num_observations
    return dense_bytes(O, 7 * (N - 1) + 3 * M) / 2**20


def theseus_available() -> bool:
    try:
        import theseus  # noqa: F401
    except ImportError:
        return False
    return True


def summarize(rows: list[dict[str, Any]]) -> list[str]:
    """Ratio lines with PASS/FAIL for each target."""
    by = {(r["backend"], r["N"], r["M"]): r for r in rows if "error" not in r and "skipped" not in r}
    verdict = {True: "PASS", False: "FAIL"}
    lines = []
    for N, M in sorted({(r["N"], r["M"]) for r in rows}):
        ours, ref = by.get(("schur", N, M)), by.get((BASELINE, N, M))
        if not (ours and ref):
            continue
        rel = ours["rms_px"] / ref["rms_px"] - 1.0
        t = ours["time_s"] / ref["time_s"]
        line = (f"({N}, {M}): RMS schur/ceres - 1 = {100 * rel:+.3f}% (|.| <= {100 * TARGET_RMS_REL:.0f}%) "
                f"{verdict[abs(rel) <= TARGET_RMS_REL]}; time schur/ceres = {t:.2f} x")
        if (N, M) in TARGET_TIME:
            line += f" (<= {TARGET_TIME[(N, M)]:.0f} x) {verdict[t <= TARGET_TIME[(N, M)]]}"
        dense = by.get(("pypose_dense", N, M))
        if dense:
            speed = dense["time_s"] / ours["time_s"]
            line += f"; pypose_dense/schur = {speed:.0f} x"
            if (N, M) == TARGET_DENSE_SPEEDUP[1]:
                line += f" (>= {TARGET_DENSE_SPEEDUP[0]:.0f} x) {verdict[speed >= TARGET_DENSE_SPEEDUP[0]]}"
        if (N, M) == TARGET_MEMORY_MB[1]:
            line += (f"; schur peak {ours['peak_mb']:.0f} MB (<= {TARGET_MEMORY_MB[0]:.0f} MB) "
                     f"{verdict[ours['peak_mb'] <= TARGET_MEMORY_MB[0]]}")
        lines.append(line)
    return lines


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"{'backend':13s} {'N':>3s} {'M':>6s} {'obs':>7s} {'time s':>8s} {'iters':>5s} {'RMS px':>9s} "
          f"{'rot deg':>8s} {'trans':>8s} {'peak MB':>8s}  status")
    for r in rows:
        head = f"{r['backend']:13s} {r['N']:3d} {r['M']:6d}"
        if "skipped" in r or "error" in r:
            print(f"{head} {'':>7s} {'-':>8s}  {r.get('skipped') or r.get('error')}")
            continue
        status = "ok" if r["success"] else "FAILED"
        print(f"{head} {r['observations']:7d} {r['time_s']:8.3f} {r['iterations']:5d} {r['rms_px']:9.5f} "
              f"{r['rot_err_deg']:8.4f} {r['trans_err']:8.4f} {r['peak_mb']:8.1f}  {status}: {r['reason']}")


# ---------------------------------------------------------------------------- CLI
def _size(text: str) -> tuple[int, int]:
    try:
        n, m = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NxM (frames x points), got {text!r}") from None
    if n < 2 or m < 1:
        raise argparse.ArgumentTypeError(f"need N >= 2 frames and M >= 1 points, got {text!r}")
    return n, m


def _sizes(text: str) -> list[tuple[int, int]]:
    return [_size(t) for t in text.split(",") if t]


def _backends(text: str) -> list[str]:
    names = [t for t in text.split(",") if t]
    bad = [n for n in names if n not in BACKENDS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown backend(s) {bad}; choose from {BACKENDS}")
    return names


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=_sizes, default=list(SIZES), help="NxM list (default: the four sizes)")
    p.add_argument("--backends", type=_backends, default=list(BACKENDS),
                   help=f"subset of {','.join(BACKENDS)}")
    p.add_argument("--runs", type=int, default=3, help="timed solves per (backend, size); median (default 3)")
    p.add_argument("--threads", type=int, default=2, help="torch / Ceres threads (default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per (backend, size) worker")
    p.add_argument("--dense-max-mb", type=float, default=4096.0,
                   help="skip PyPose dense LM where its estimated memory exceeds this (default 4096)")
    p.add_argument("--json", type=Path, default=ROOT / "ba" / "results" / "bench_ba.json")
    p.add_argument("--worker", choices=BACKENDS, default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker-size", type=_size, default=None, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.worker is not None:
        serve(args)
        return 0
    print(f"Bundle adjustment on synthetic problems (0.5 px noise, ~2 deg / 5% baseline initial error), "
          f"{args.threads} thread(s), median of {args.runs} run(s), each backend in a fresh process")
    rows: list[dict[str, Any]] = []
    cap = args.dense_max_mb
    for size in args.sizes:
        for backend in args.backends:
            row: dict[str, Any] = {"backend": backend, "N": size[0], "M": size[1]}
            if backend == "theseus" and not theseus_available():
                row["skipped"] = "skipped: theseus-ai not installed (pip install 'imatch-s2ld[theseus]')"
            elif backend == "pypose_dense" and (mb := dense_mb(*size, args.seed)) > cap:
                row["skipped"] = (f"skipped: dense LM needs ~{mb / 1024:.1f} GiB > "
                                  f"--dense-max-mb {args.dense_max_mb:.0f}")
            else:
                row = run_worker(args, backend, size)
            rows.append(row)
            done = row.get("skipped") or row.get("error") or f"{row['time_s']:.3f} s"
            print(f"  done {backend} {size[0]}x{size[1]}: {done}", flush=True)
    print()
    print_table(rows)
    print()
    for line in summarize(rows):
        print(line)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"rows": rows, "ratios": summarize(rows)}, indent=1))
    print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
