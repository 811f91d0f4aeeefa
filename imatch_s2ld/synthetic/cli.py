"""Command line: ``python -m imatch_s2ld.synthetic --preset default --out DIR [options]``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ..errors import InputError
from .config import PRESETS
from .generate import generate


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit code 2 (argparse's default code)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of the generator CLI."""
    p = _Parser(
        prog="imatch generate",
        description="Render a synthetic multi-view dataset with exact ground truth.",
    )
    p.add_argument("--preset", default="default", help="preset name (see --list-presets)")
    p.add_argument("--out", help="output folder (default: datasets/synthetic/<preset>)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed = same bytes)")
    p.add_argument("--textures", help="folder of texture images to use instead of procedural ones")
    p.add_argument("--num-scenes", type=int, help="number of scenes")
    p.add_argument("--views", type=int, help="wide-baseline views per scene (MegaDepth layout)")
    p.add_argument("--frames", type=int, help="video frames per scene (0 = no video)")
    p.add_argument("--eval-views", type=int, help="held-out evaluation views per video scene")
    p.add_argument("--size", help="image size WIDTHxHEIGHT, e.g. 640x480")
    p.add_argument("--list-presets", action="store_true", help="list the presets and exit")
    p.add_argument("--workers", type=int, default=2, help="render threads (output unaffected)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list_presets:
        for name, (desc, _) in PRESETS.items():
            print(f"{name:14s} {desc}")
        return 0
    if not args.out:
        args.out = str(Path("datasets") / "synthetic" / args.preset)
    options = {
        "textures": args.textures,
        "num_scenes": args.num_scenes,
        "views": args.views,
        "video_frames": args.frames,
        "eval_views": args.eval_views,
        "size": args.size,
    }
    overrides = {k: v for k, v in options.items() if v is not None}
    try:
        result = generate(
            args.preset,
            args.out,
            seed=args.seed,
            progress=not args.quiet,
            workers=args.workers,
            **overrides,
        )
    except InputError as err:
        print(f"imatch generate: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {len(result.files)} files for {len(result.scenes)} scenes under {result.root}")
    print(
        f"render rate: {result.render_rate:.1f} views/s "
        f"({result.views_rendered} views at {result.config.size[0]}x{result.config.size[1]})"
    )
    return 0
