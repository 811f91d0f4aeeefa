"""Inference time and peak memory of S2LD vs LoFTR per grayscale image pair on CPU (random weights).

Targets: S2LD / LoFTR time <= 0.6 x and peak memory <= 1.0 x, both measured in the same run.

- S2LD: ``S2LD.from_config(--config, **--s2ld-conf).eval()`` called as ``model(image0, image1)``.
- LoFTR: ``kornia.feature.LoFTR(pretrained=None).eval()`` called with ``{"image0", "image1"}``.

Both get the same (1, 1, H, W) pair (a smooth random texture and a shifted copy) under
``torch.inference_mode`` with the same ``torch.set_num_threads``. Time: median (and best) over
``--runs`` calls after ``--warmup`` calls. Each model lives in its own fresh subprocess (``--worker
NAME``); both are started first, then their calls are interleaved (s2ld, loftr, loftr, s2ld, ...),
so that a changing load on the machine hits both models alike.

Peak memory = (peak RSS during all inference calls) - (RSS after building the model and the
inputs). The peak is the kernel's exact high-water mark ``VmHWM`` (``/proc/self/status``), reset
to the current RSS just before the first call by writing ``5`` to ``/proc/self/clear_refs``
(Linux >= 4.0). Where that is not allowed, a thread samples ``/proc/self/statm`` every 1 ms
instead (a lower bound: short peaks can be missed). Linux only. The warm-up calls count for the
peak: memory that the first call keeps (e.g. oneDNN caches) is part of the cost.

With random weights few or no matches pass the matching thresholds, so the refinement stages of
both models do little work; the "matches" column shows it. Compare a worst case with e.g.
``--s2ld-conf '{"coarse": {"threshold": 0.0}}'`` (every mutual nearest neighbour is refined).

Usage: ``python benchmarks/bench_s2ld.py [--config base] [--size 640x480] [--runs 5] [--warmup 1]
[--threads N] [--s2ld-conf JSON|FILE] [--json OUT]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from peak_rss import PeakRSS, status_kb  # benchmarks/peak_rss.py (this script's folder)

TARGET_TIME = 0.6  # S2LD / LoFTR, at most
TARGET_MEMORY = 1.0  # S2LD / LoFTR, at most
BASELINE = "loftr"
MODELS = ("s2ld", BASELINE)
RESULT_PREFIX = "RESULT "


# ---------------------------------------------------------------------------- models (worker side)
def make_pair(width: int, height: int) -> tuple[Any, Any]:
    """(1, 1, H, W) float32 pair in [0, 1]: a smooth random texture and a copy shifted by (8, 4) px."""
    import torch

    g = torch.Generator().manual_seed(0)
    base = torch.rand(1, 1, height // 8, width // 8, generator=g)
    image0 = torch.nn.functional.interpolate(base, size=(height, width), mode="bilinear", align_corners=False)
    return image0, torch.roll(image0, shifts=(4, 8), dims=(2, 3))


def build_model(name: str, config: str, s2ld_conf: dict[str, Any], image0: Any,
                image1: Any) -> tuple[Callable[[], int], int, str]:
    """A closure running one inference and returning the match count, the parameter count, a label."""
    import torch

    torch.manual_seed(0)
    if name == "s2ld":
        from imatch_s2ld.models import S2LD

        model = S2LD.from_config(config, **s2ld_conf).eval()
        label = f"s2ld-{config}" + ("*" if s2ld_conf else "")

        def run() -> int:
            return int(model(image0, image1).mkpts0.shape[0])
    else:
        from kornia.feature import LoFTR

        model = LoFTR(pretrained=None).eval()
        label = "loftr (kornia)"

        def run() -> int:
            return int(model({"image0": image0, "image1": image1})["keypoints0"].shape[0])
    return run, sum(p.numel() for p in model.parameters()), label


def serve(args: argparse.Namespace) -> None:
    """Worker process: build one model, then answer ``run`` lines on stdin with ``TIME s matches``
    lines until ``quit``; finally print the ``RESULT`` line (peak memory over all calls)."""
    import gc

    import torch

    torch.set_num_threads(args.threads)
    width, height = args.size
    image0, image1 = make_pair(width, height)
    run, params, label = build_model(args.worker, args.config, args.s2ld_conf, image0, image1)
    gc.collect()
    baseline_kb = status_kb("VmRSS")
    print("READY", flush=True)
    with torch.inference_mode(), PeakRSS() as peak:
        for line in sys.stdin:
            if line.strip() != "run":
                break
            t0 = time.perf_counter()
            matches = run()
            print(f"TIME {time.perf_counter() - t0} {matches}", flush=True)
    result = {"model": args.worker, "label": label, "params": params, "threads": torch.get_num_threads(),
              "peak_mb": (peak.peak_kb - baseline_kb) / 1024, "baseline_mb": baseline_kb / 1024,
              "memory_method": peak.method}
    print(RESULT_PREFIX + json.dumps(result), flush=True)


# ---------------------------------------------------------------------------- parent
class Worker:
    """A ``--worker NAME`` subprocess driven line by line (stderr goes to a temporary file)."""

    def __init__(self, args: argparse.Namespace, name: str) -> None:
        width, height = args.size
        argv = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--config", args.config,
                "--size", f"{width}x{height}", "--threads", str(args.threads),
                "--s2ld-conf", json.dumps(args.s2ld_conf)]
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self.name, self.stderr = name, tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, text=True, env=env)
        self._expect("READY")

    def _expect(self, prefix: str) -> str:
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line.startswith(prefix):
            self.proc.kill()
            self.stderr.seek(0)
            tail = (self.stderr.read().strip().splitlines() or [line.strip() or "(no output)"])[-1]
            raise SystemExit(f"bench_s2ld: worker {self.name!r} failed: {tail}")
        return line[len(prefix):].strip()

    def _send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def run(self) -> tuple[float, int]:
        """One inference: (seconds, matches)."""
        self._send("run")
        seconds, matches = self._expect("TIME ").split()
        return float(seconds), int(matches)

    def finish(self) -> dict[str, Any]:
        """Stop the worker and return its result (peak memory...)."""
        self._send("quit")
        result = json.loads(self._expect(RESULT_PREFIX))
        self.proc.wait()
        self.stderr.close()
        return result


def measure(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Both workers alive at once, calls interleaved (order alternating each round) so that a
    changing machine load hits both models alike; per model: times, median, peak memory."""
    workers = {name: Worker(args, name) for name in MODELS}  # built one after the other
    times: dict[str, list[float]] = {name: [] for name in MODELS}
    matches = dict.fromkeys(MODELS, 0)
    for i in range(args.warmup + args.runs):
        for name in MODELS if i % 2 == 0 else MODELS[::-1]:
            seconds, matches[name] = workers[name].run()
            if i >= args.warmup:
                times[name].append(seconds)
    results = {}
    for name, w in workers.items():
        results[name] = {**w.finish(), "times_s": times[name], "time_s": statistics.median(times[name]),
                         "best_s": min(times[name]), "matches": matches[name]}
    return results


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def summarize(models: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Ratios S2LD / baseline and PASS/FAIL against the targets."""
    time_ratio = models["s2ld"]["time_s"] / models[BASELINE]["time_s"]
    mem_ratio = models["s2ld"]["peak_mb"] / max(models[BASELINE]["peak_mb"], 1e-9)
    return {"models": models, "time_ratio": time_ratio, "memory_ratio": mem_ratio,
            "best_time_ratio": models["s2ld"]["best_s"] / models[BASELINE]["best_s"],
            "time_pass": time_ratio <= TARGET_TIME, "memory_pass": mem_ratio <= TARGET_MEMORY}


def print_table(summary: dict[str, Any]) -> None:
    """The per-model table and the ratio lines."""
    print(f"{'model':16s} {'params M':>8s} {'median s/pair':>13s} {'best s':>7s} {'peak MB':>8s} "
          f"{'matches':>7s}  runs (s)")
    for m in summary["models"].values():
        runs = ", ".join(f"{t:.2f}" for t in m["times_s"])
        print(f"{m['label']:16s} {m['params'] / 1e6:8.2f} {m['time_s']:13.3f} {m['best_s']:7.3f} "
              f"{m['peak_mb']:8.1f} {m['matches']:7d}  {runs}")
    verdict = {True: "PASS", False: "FAIL"}
    print(f"s2ld / {BASELINE}: time {summary['time_ratio']:.2f} x (target <= {TARGET_TIME:.1f} x) "
          f"{verdict[summary['time_pass']]}; memory {summary['memory_ratio']:.2f} x "
          f"(target <= {TARGET_MEMORY:.1f} x) {verdict[summary['memory_pass']]}; "
          f"best-run time ratio {summary['best_time_ratio']:.2f} x")


# ---------------------------------------------------------------------------- CLI
def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH, got {text!r}") from None
    if width <= 0 or height <= 0 or width % 8 or height % 8:
        raise argparse.ArgumentTypeError(f"W and H must be positive multiples of 8, got {text!r}")
    return width, height


def _conf(text: str) -> dict[str, Any]:
    source = Path(text).read_text() if text and Path(text).is_file() else text
    try:
        conf = json.loads(source or "{}")
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not JSON nor a JSON file: {err}") from None
    if not isinstance(conf, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return conf


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The benchmark options (see module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="base", help="S2LD named config (default base)")
    p.add_argument("--size", type=_size, default=(640, 480), help="WxH (default 640x480)")
    p.add_argument("--runs", type=_positive, default=5, help="timed calls per model (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls first (default 1)")
    p.add_argument("--threads", type=_positive, default=os.cpu_count() or 1,
                   help="torch.set_num_threads for both models (default: all cores)")
    p.add_argument("--s2ld-conf", type=_conf, default={}, help="S2LD conf overrides (JSON or JSON file)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--worker", choices=MODELS, default=None, help=argparse.SUPPRESS)
    return p


def _check_s2ld_conf(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Build the S2LD model once here so that a bad --config / --s2ld-conf fails fast (exit 2)."""
    from imatch_s2ld.errors import InputError
    from imatch_s2ld.models import S2LD

    try:
        S2LD.from_config(args.config, **args.s2ld_conf)
    except InputError as err:
        parser.error(f"--config/--s2ld-conf: {err}")


def main(argv: list[str] | None = None) -> int:
    """Run the two workers (or, with ``--worker``, be one) and print the table."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.worker is not None:
        serve(args)
        return 0
    _check_s2ld_conf(parser, args)
    width, height = args.size
    conf = f" + {json.dumps(args.s2ld_conf)}" if args.s2ld_conf else ""
    print(f"S2LD {args.config}{conf} vs LoFTR (kornia), random weights, {width}x{height} grayscale pair, "
          f"CPU, {args.threads} thread(s), {args.runs} interleaved run(s) after {args.warmup} warm-up")
    load_before = _loadavg()
    summary = summarize(measure(args))
    load_after = _loadavg()
    print_table(summary)
    method = summary["models"]["s2ld"]["memory_method"]
    print(f"peak MB = peak RSS during inference - RSS after model + inputs ({method}); "
          f"load average before: {load_before}, after: {load_after}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        record = {"config": args.config, "s2ld_conf": args.s2ld_conf, "size": [width, height],
                  "runs": args.runs, "warmup": args.warmup, "threads": args.threads,
                  "load_before": load_before, "load_after": load_after, **summary}
        args.json.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
