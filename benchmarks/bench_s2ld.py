"""Inference time and peak memory per image pair on CPU: the shipped S2LD vs ALIKED+LightGlue (and
kornia's LoFTR), trained models on a real pair.

Target: S2LD / ALIKED+LightGlue time <= 0.5 x with no more peak memory (<= 1.0 x), measured in the
same run.

- Matchers come from the registry (``imatch_s2ld.load_matcher``), called as ``matcher.match(image0,
  image1)`` on uint8 images, exactly as ``imatch evaluate`` calls them: ``s2ld`` (the shipped
  checkpoint; ``s2ld:PATH`` another one), ``aliked+lightglue`` (kornia's ALIKED + LightGlue with the
  pretrained weights, kornia's LightGlue defaults, its feature cache off so that every call extracts
  both images), ``loftr-random`` (kornia's LoFTR with random weights: no LoFTR weights exist here, so
  it finds few matches and its refinement does little: a lower bound of LoFTR's time). Options
  follow the name after ``@``: ``s2ld@sparse_scale=0.5@keypoints.detection_threshold=0.05``.
- The pair: ``--pair IMG0 IMG1`` resized to ``--size`` (default: Strecha fountain-P11 images 0000 and
  0002 from ``../shared/data``, 640x480; without them a rendered synthetic pair).

Time: median (and best) over ``--runs`` calls after ``--warmup`` calls. Each matcher lives in its own
fresh subprocess (``--worker NAME``); all are started first, then their calls are interleaved (the
order alternating each round), so that a changing load on the machine hits every matcher alike.

Peak memory = (peak RSS during all calls) - (RSS after building the matcher and reading the images).
The peak is the kernel's exact high-water mark ``VmHWM`` (``/proc/self/status``), reset to the
current RSS just before the first call by writing ``5`` to ``/proc/self/clear_refs`` (Linux >= 4.0).
Where that is not allowed, a thread samples ``/proc/self/statm`` every 1 ms instead (a lower bound).
Linux only. The warm-up calls count for the peak.

Usage: ``python benchmarks/bench_s2ld.py [--matchers s2ld,aliked+lightglue,loftr-random]
[--baseline aliked+lightglue] [--pair IMG0 IMG1] [--size 640x480] [--runs 5] [--warmup 1]
[--threads N] [--json OUT]``
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

TARGET_TIME = 0.5  # S2LD / baseline, at most
TARGET_MEMORY = 1.0  # S2LD / baseline, at most
DEFAULT_MATCHERS = ("s2ld", "aliked+lightglue", "loftr-random")
DEFAULT_BASELINE = "aliked+lightglue"
RESULT_PREFIX = "RESULT "
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "strecha" / "fountain-P11" / "images"
DEFAULT_PAIR = (SHARED / "0000.jpg", SHARED / "0002.jpg")


# ---------------------------------------------------------------------------- worker side
def load_pair(pair: tuple[Path, Path] | None, width: int, height: int) -> tuple[Any, Any, str]:
    """Two uint8 RGB images of size (height, width) and a label: ``pair``, else the default Strecha
    pair, else a rendered synthetic pair."""
    import cv2

    pair = pair or (DEFAULT_PAIR if all(p.is_file() for p in DEFAULT_PAIR) else None)
    if pair is None:
        from imatch_s2ld.synthetic import generate

        with tempfile.TemporaryDirectory() as tmp:
            generate("default", tmp, seed=0, progress=False, num_scenes=1, views=2, video_frames=0,
                     eval_views=0, size=(width, height))
            files = sorted(Path(tmp).rglob("images/*.jpg"))[:2]
            images = [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files]
        return images[0], images[1], "a rendered synthetic pair (no ../shared/data)"
    images = []
    for path in pair:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise SystemExit(f"bench_s2ld: {path}: cannot read the image")
        images.append(cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), (width, height),
                                 interpolation=cv2.INTER_AREA))
    return images[0], images[1], f"{pair[0].name} / {pair[1].name}"


def build_matcher(name: str) -> tuple[Callable[[Any, Any], int], int, str]:
    """A closure matching two images and returning the match count, the parameter count, a label."""
    import torch

    torch.manual_seed(0)
    if name == "loftr-random":
        from kornia.feature import LoFTR

        from imatch_s2ld.data.images import to_grayscale

        model = LoFTR(pretrained=None).eval()

        def run(image0: Any, image1: Any) -> int:
            t0, t1 = (torch.from_numpy(to_grayscale(i)).float()[None, None] / 255 for i in (image0, image1))
            return int(model({"image0": t0, "image1": t1})["keypoints0"].shape[0])

        return run, sum(p.numel() for p in model.parameters()), "loftr (random w.)"
    from imatch_s2ld.matchers import load_matcher, parse_matcher_options

    base, *options = name.split("@")  # NAME@KEY=VALUE@...: matcher options
    conf = {"cache_images": 0} if "lightglue" in base else {}
    matcher = load_matcher(base, **conf, **parse_matcher_options(options))
    modules = [matcher] if isinstance(matcher, torch.nn.Module) else \
        [m for m in vars(matcher).values() if isinstance(m, torch.nn.Module)]
    params = sum(p.numel() for m in modules for p in m.parameters())

    def run(image0: Any, image1: Any) -> int:
        return int(matcher.match(image0, image1)[0].shape[0])

    return run, params, name


def serve(args: argparse.Namespace) -> None:
    """Worker process: build one model, then answer ``run`` lines on stdin with ``TIME s matches``
    lines until ``quit``; finally print the ``RESULT`` line (peak memory over all calls)."""
    import gc

    import torch

    torch.set_num_threads(args.threads)
    width, height = args.size
    image0, image1, _ = load_pair(args.pair, width, height)
    run, params, label = build_matcher(args.worker)
    gc.collect()
    baseline_kb = status_kb("VmRSS")
    print("READY", flush=True)
    with torch.inference_mode(), PeakRSS() as peak:
        for line in sys.stdin:
            if line.strip() != "run":
                break
            t0 = time.perf_counter()
            matches = run(image0, image1)
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
        argv = [sys.executable, str(Path(__file__).resolve()), "--worker", name,
                "--size", f"{width}x{height}", "--threads", str(args.threads)]
        if args.pair:
            argv += ["--pair", *(str(p) for p in args.pair)]
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
    names = tuple(args.matchers)
    workers = {name: Worker(args, name) for name in names}  # built one after the other
    times: dict[str, list[float]] = {name: [] for name in names}
    matches = dict.fromkeys(names, 0)
    for i in range(args.warmup + args.runs):
        for name in names if i % 2 == 0 else names[::-1]:
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


def summarize(models: dict[str, dict[str, Any]], baseline: str) -> dict[str, Any]:
    """Ratios of every matcher to the baseline; PASS/FAIL of the first (S2LD) against the targets."""
    base = models[baseline]
    ratios = {name: {"time": m["time_s"] / base["time_s"], "best_time": m["best_s"] / base["best_s"],
                     "memory": m["peak_mb"] / max(base["peak_mb"], 1e-9)} for name, m in models.items()}
    first = next(iter(models))
    return {"models": models, "baseline": baseline, "ratios": ratios, "subject": first,
            "time_pass": ratios[first]["time"] <= TARGET_TIME,
            "memory_pass": ratios[first]["memory"] <= TARGET_MEMORY}


def print_table(summary: dict[str, Any]) -> None:
    """The per-model table and the ratio lines."""
    width = max([18] + [len(m["label"]) for m in summary["models"].values()])
    print(f"{'matcher':{width}s} {'params M':>8s} {'median s/pair':>13s} {'best s':>7s} {'peak MB':>8s} "
          f"{'matches':>7s} {'time x':>7s} {'mem x':>6s}  runs (s)")
    for name, m in summary["models"].items():
        runs = ", ".join(f"{t:.2f}" for t in m["times_s"])
        r = summary["ratios"][name]
        print(f"{m['label']:{width}s} {m['params'] / 1e6:8.2f} {m['time_s']:13.3f} {m['best_s']:7.3f} "
              f"{m['peak_mb']:8.1f} {m['matches']:7d} {r['time']:7.2f} {r['memory']:6.2f}  {runs}")
    verdict = {True: "PASS", False: "FAIL"}
    subject, base = summary["subject"], summary["baseline"]
    r = summary["ratios"][subject]
    print(f"{subject} / {base}: time {r['time']:.2f} x (target <= {TARGET_TIME:.1f} x) "
          f"{verdict[summary['time_pass']]}; memory {r['memory']:.2f} x "
          f"(target <= {TARGET_MEMORY:.1f} x) {verdict[summary['memory_pass']]}; "
          f"best-run time ratio {r['best_time']:.2f} x")


# ---------------------------------------------------------------------------- CLI
def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH, got {text!r}") from None
    if width <= 0 or height <= 0 or width % 8 or height % 8:
        raise argparse.ArgumentTypeError(f"W and H must be positive multiples of 8, got {text!r}")
    return width, height


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The benchmark options (see module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--matchers", type=lambda t: [m for m in t.split(",") if m],
                   default=list(DEFAULT_MATCHERS),
                   help="comma-separated; the first is the one checked against the targets "
                        f"(default {','.join(DEFAULT_MATCHERS)})")
    p.add_argument("--baseline", default=DEFAULT_BASELINE,
                   help=f"ratios against this (default {DEFAULT_BASELINE})")
    p.add_argument("--pair", type=Path, nargs=2, default=None, metavar=("IMG0", "IMG1"),
                   help="the image pair (default: Strecha fountain-P11 0000/0002 from ../shared/data)")
    p.add_argument("--size", type=_size, default=(640, 480),
                   help="WxH the images are resized to (default 640x480)")
    p.add_argument("--runs", type=_positive, default=5, help="timed calls per matcher (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls first (default 1)")
    p.add_argument("--threads", type=_positive, default=os.cpu_count() or 1,
                   help="torch.set_num_threads for every matcher (default: all cores)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the workers (or, with ``--worker``, be one) and print the table."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.worker is not None:
        serve(args)
        return 0
    if args.baseline not in args.matchers:
        parser.error(f"--baseline {args.baseline!r} is not among --matchers {','.join(args.matchers)}")
    width, height = args.size
    _, _, pair_label = load_pair(args.pair, width, height)
    print(f"{', '.join(args.matchers)} on {pair_label} at {width}x{height}, CPU, {args.threads} thread(s), "
          f"{args.runs} interleaved run(s) after {args.warmup} warm-up; ratios to {args.baseline}")
    load_before = _loadavg()
    summary = summarize(measure(args), args.baseline)
    load_after = _loadavg()
    print_table(summary)
    method = summary["models"][summary["subject"]]["memory_method"]
    print(f"peak MB = peak RSS during matching - RSS after matcher + images ({method}); "
          f"load average before: {load_before}, after: {load_after}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        record = {"matchers": args.matchers, "pair": pair_label, "size": [width, height], "runs": args.runs,
                  "warmup": args.warmup, "threads": args.threads, "load_before": load_before,
                  "load_after": load_after, **summary}
        args.json.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
