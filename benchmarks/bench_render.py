"""Render-rate benchmark of the synthetic scene generator (target: >= 20 views/s at 640x480).

Renders ``--views`` wide-baseline views of a facade and a room scene with the default domain and
with a heavy domain (every effect on: fog, Gaussian + motion blur, read + shot noise, gamma,
headlight, colour cast) and prints views/s and the ratio to the target. Scene building (texture
synthesis) is timed separately; file writing is not included.

Usage: ``python benchmarks/bench_render.py [--views 100] [--size 640x480]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from imatch_s2ld.synthetic import Domain, Renderer, build_scene, intrinsics, sample_wide_views

TARGET = 20.0  # views per second

HEAVY = Domain(
    ambient=0.2,
    diffuse=0.3,
    headlight=0.8,
    exposure=0.6,
    gamma=1.4,
    blur_sigma=1.0,
    motion_blur=6.0,
    noise_sigma=0.02,
    shot_noise=0.01,
    fog_density=0.03,
    colour_cast=(1.2, 0.95, 0.7),
)


def bench(
    domain_name: str, domain: Domain, n_views: int, width: int, height: int, workers: int
) -> float:
    """Views/s over both layouts for one domain (prints one line per layout)."""
    total_views, total_time = 0, 0.0
    for layout in ("facade", "room"):
        t0 = time.perf_counter()
        scene = build_scene(layout, layout, np.random.default_rng(0), Domain())
        renderer = Renderer(scene, width, height)
        build = time.perf_counter() - t0
        K = intrinsics(width, height, 65.0)
        poses = sample_wide_views(scene.hints, n_views // 2, np.random.default_rng(1))
        renderer.render(K, poses[0], domain, np.random.default_rng(0))  # warm-up
        t0 = time.perf_counter()
        for _ in renderer.render_many(K, poses, domain, [[k] for k in range(len(poses))], workers):
            pass
        dt = time.perf_counter() - t0
        total_views, total_time = total_views + len(poses), total_time + dt
        print(
            f"  {domain_name:8s} {layout:7s} {len(poses) / dt:6.1f} views/s "
            f"({len(scene.textures)} quads, scene build {build:.1f} s)"
        )
    return total_views / total_time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", type=int, default=100)
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--workers", type=int, default=2, help="render threads (1 = serial)")
    args = parser.parse_args()
    width, height = (int(x) for x in args.size.split("x"))
    print(
        f"rendering {args.views} views per domain at {width}x{height}, "
        f"{args.workers} worker thread(s)"
    )
    for name, domain in (("default", Domain()), ("heavy", HEAVY)):
        rate = bench(name, domain, args.views, width, height, args.workers)
        print(
            f"{name:8s} {rate:6.1f} views/s = {rate / TARGET:.2f} x target ({TARGET:.0f} views/s)"
        )


if __name__ == "__main__":
    main()
