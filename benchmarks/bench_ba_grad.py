"""Gradient through the BA (``--ba-grad implicit``) vs the fixed-optimum gradient (iMatching, default).

On real fine-tuning windows (a synthetic ``default``-preset video rendered here, or ``--video DIR``), each
window goes through the fine-tuning pipeline's geometry (S2LD matches, SIFT-track BA, S2LD tracks
triangulated with the BA poses: ``WindowTargets.from_poses``, as ``--geometry-from sift``). Then the
reprojection term alone (``reprojection_weight=1``, other weights 0) is backpropagated into the S2LD
parameters with each variant, from the same targets:

- ``fixed`` (the baseline): BA solution held constant (``ba_grad: fixed``);
- ``implicit``: re-solve (phase 1: Schur LM to convergence) + implicit differentiation (``ba_grad:
  implicit``, defaults); the BA objective is then the loss itself (Cauchy 2 px, same weights);
- ``implicit, 5 it`` / ``implicit, 0 it``: phase 1 stopped after 5 / 0 LM iterations (BA not converged);
- ``implicit, BA 8 px``: converged, but the BA's Cauchy width (8 px) differs from the loss' (2 px).

Each implicit variant also runs with its re-solved solution detached (``implicit_ba.through_solution:
false``: the direct term only); ``|g - g_detached| / |g|`` is the share of the term through the solution.
Printed per window and as means: cosine similarity and norm ratio of each variant's parameter gradient
to the ``fixed`` one measured in the same run, that share, and the time of loss + backward (ratio to
``fixed``; one untimed warm-up call of each variant first).

Usage::

    python benchmarks/bench_ba_grad.py [--windows 3] [--threads 2] [--frames 15] [--size 320x240]
        [--video DIR --intrinsics FILE] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imatch_s2ld.ba import reconstruct_window
from imatch_s2ld.finetune import open_video, resolve_intrinsics
from imatch_s2ld.finetune.data import VideoWindows
from imatch_s2ld.finetune.geometry import merge_window_matches, sift_window_matches
from imatch_s2ld.finetune.loss import FinetuneLoss
from imatch_s2ld.finetune.targets import WindowTargets
from imatch_s2ld.finetune.window import WindowMatches, match_window, window_pairs
from imatch_s2ld.models.s2ld import DEFAULT_CHECKPOINT, S2LD
from imatch_s2ld.synthetic import generate

BASELINE = "fixed"
REPROJECTION_ONLY = {"reprojection_weight": 1.0, "triangulation_weight": 0.0, "matching_weight": 0.0,
                     "reprojection_points": "prediction"}
VARIANTS: dict[str, dict[str, Any]] = {
    "fixed": {"ba_grad": "fixed"},
    "implicit": {"ba_grad": "implicit"},
    "implicit, 5 it": {"ba_grad": "implicit", "implicit_ba": {"max_iterations": 5}},
    "implicit, 0 it": {"ba_grad": "implicit", "implicit_ba": {"max_iterations": 0}},
    "implicit, BA 8 px": {"ba_grad": "implicit", "implicit_ba": {"robust_scale_px": 8.0}},
}
DETACHED = " (detached)"


def variants() -> dict[str, dict[str, Any]]:
    """Every variant, plus a solution-detached twin of each implicit one."""
    out = {}
    for name, conf in VARIANTS.items():
        out[name] = {**REPROJECTION_ONLY, **conf}
        if conf["ba_grad"] == "implicit":
            out[name + DETACHED] = {**REPROJECTION_ONLY, **conf,
                                    "implicit_ba": {**conf.get("implicit_ba", {}), "through_solution": False}}
    return out


def video_windows(args: argparse.Namespace, tmp: Path) -> VideoWindows:
    """The windows of ``--video`` or of a freshly rendered synthetic video."""
    if args.video is None:
        w, h = (int(v) for v in args.size.split("x"))
        generate("default", tmp, seed=args.seed, progress=False, layouts=("facade",), num_scenes=1, views=2,
                 video_frames=args.frames, eval_views=0, size=(w, h))
        root = tmp / "video" / "facade_0000"
        frames, intrinsics = root / "frames", root / "intrinsics.txt"
    else:
        frames, intrinsics = Path(args.video), args.intrinsics
    video = open_video(frames)
    return VideoWindows(video, resolve_intrinsics(video, intrinsics).K, length=4, spacing=2)


def window_targets(net: S2LD, images: torch.Tensor, K: torch.Tensor,
                   min_points: int) -> tuple[WindowMatches, WindowTargets] | str:
    """``--geometry-from sift`` geometry of a window (as ``FinetuneModel``), or why it is unusable."""
    pairs = window_pairs(images.shape[0])
    s2ld = match_window(net, images, pairs)
    gray = [np.clip(im[0].numpy() * 255.0 + 0.5, 0, 255).astype(np.uint8) for im in images]
    geometry = merge_window_matches(WindowMatches(s2ld.keypoints, []), sift_window_matches(gray, pairs))
    rec = reconstruct_window(geometry.keypoints, geometry.pairs, K.double())
    if not rec.success:
        return rec.reason
    if len(rec.init.frames) < images.shape[0] or rec.init.problem.num_points < min_points:
        return f"weak: {len(rec.init.frames)} frames, {rec.init.problem.num_points} landmarks"
    return s2ld, WindowTargets.from_poses(rec, s2ld, K)


def gradient(net: S2LD, criterion: FinetuneLoss, images: torch.Tensor, K: torch.Tensor,
             matches: WindowMatches, targets: WindowTargets) -> tuple[torch.Tensor, float, dict[str, float]]:
    """Flattened parameter gradient of the loss, seconds for loss + backward, the loss terms."""
    net.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    out = criterion(net, images, K, matches, targets)
    out.total.backward()
    seconds = time.perf_counter() - t0
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten().double()
                      for p in net.parameters()])
    return flat, seconds, {k: float(v) for k, v in out.terms.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=3, help="usable windows to measure")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frames", type=int, default=15, help="synthetic video length")
    parser.add_argument("--size", default="320x240", help="synthetic video size WxH")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-points", type=int, default=80, help="quality gate (landmarks)")
    parser.add_argument("--video", help="a folder of frames instead of the synthetic video")
    parser.add_argument("--intrinsics", help="intrinsics of --video")
    parser.add_argument("--json", help="write the measurements here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    net = S2LD.from_checkpoint(DEFAULT_CHECKPOINT).eval()
    criteria = {name: FinetuneLoss(conf) for name, conf in variants().items()}
    rows: list[dict[str, Any]] = []
    warm = False
    with tempfile.TemporaryDirectory() as tmp:
        windows = video_windows(args, Path(tmp))
        print(f"{len(windows)} windows of 4 frames (spacing 2), {windows.size[0]}x{windows.size[1]}, "
              f"{args.threads} threads")
        for index in range(len(windows)):
            if len(rows) >= args.windows:
                break
            item = windows[index]
            images, K = item["images"], item["K"]
            got = window_targets(net, images, K, args.min_points)
            if isinstance(got, str):
                print(f"window {index}: skipped ({got})")
                continue
            matches, targets = got
            if not warm:  # first calls pay one-off costs (allocations, imports, PyPose/Theseus set-up)
                for criterion in criteria.values():
                    gradient(net, criterion, images, K, matches, targets)
                warm = True
            grads, row = {}, {"window": index}
            for name, criterion in criteria.items():
                g, seconds, terms = gradient(net, criterion, images, K, matches, targets)
                grads[name] = g
                row[name] = {"seconds": seconds, "loss": terms["reprojection"],
                             "reproj_px": terms["reproj_px"], "num_targets": terms["num_targets"],
                             "grad_norm": float(g.norm())}
            base = grads[BASELINE]
            for name in VARIANTS:
                g, r = grads[name], row[name]
                r["cos_to_fixed"] = float(torch.cosine_similarity(g, base, dim=0))
                r["norm_ratio_to_fixed"] = float(g.norm() / base.norm())
                r["time_ratio_to_fixed"] = r["seconds"] / row[BASELINE]["seconds"]
                if name + DETACHED in grads:
                    r["through_solution_share"] = float((g - grads[name + DETACHED]).norm() / g.norm())
            rows.append(row)
            print(f"window {index}: {int(row[BASELINE]['num_targets'])} tracked matches")
            for name in VARIANTS:
                r = row[name]
                share = "" if name == BASELINE else "  through-solution share {:.2g}".format(
                    r["through_solution_share"])
                print(f"  {name:<18} cos {r['cos_to_fixed']:+.3f}  norm x{r['norm_ratio_to_fixed']:.2f}  "
                      f"{r['seconds']:.2f} s (x{r['time_ratio_to_fixed']:.2f})  loss {r['loss']:.3f}  "
                      f"{r['reproj_px']:.2f} px{share}")
    if not rows:
        raise SystemExit("no usable window (lower --min-points or use a longer/larger video)")
    print(f"\nmeans over {len(rows)} windows (ratios to the '{BASELINE}' gradient of the same run):")
    for name in VARIANTS:
        mean = {k: statistics.mean(r[name][k] for r in rows)
                for k in ("cos_to_fixed", "norm_ratio_to_fixed", "seconds", "time_ratio_to_fixed")}
        share = "" if name == BASELINE else "  through-solution share {:.2g}".format(
            statistics.mean(r[name]["through_solution_share"] for r in rows))
        print(f"  {name:<18} cos {mean['cos_to_fixed']:+.3f}  norm x{mean['norm_ratio_to_fixed']:.2f}  "
              f"{mean['seconds']:.2f} s/step (x{mean['time_ratio_to_fixed']:.2f}){share}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "windows": rows}, indent=1))


if __name__ == "__main__":
    main()
