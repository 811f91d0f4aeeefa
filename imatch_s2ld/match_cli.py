"""``imatch match IMG0 IMG1 --out matches.png``: match one image pair and draw or save the matches.

Example::

    imatch match a.jpg b.jpg --matcher sift --resize 640 --out matches.png --save-matches m.npz

``--matcher`` takes every name of :func:`imatch_s2ld.load_matcher` (``s2ld`` = the shipped default
checkpoint, ``s2ld:PATH``, ``sift``, ``orb``, ``loftr:PATH``, ``aliked+lightglue``, ``disk+lightglue``);
``--matcher-opt KEY=VALUE`` (repeatable) passes options to it. With ``--resize`` the matcher sees
resized images; keypoints are mapped back, so drawings and saved matches are always in pixels of
the original images (integer coordinates = pixel centres, see :mod:`imatch_s2ld.conventions`).
``--out`` draws the pair side by side with at most ``--max-draw`` match lines, coloured by
confidence (``--color confidence``, blue low to red high) or all green (``--color plain``).
``--save-matches`` writes ``kpts0`` (N, 2), ``kpts1`` (N, 2), ``confidence`` (N,) float32 to a
``.npz``, or a ``.txt`` with one ``x0 y0 x1 y1 confidence`` line per match. Without either, only the
summary line (matches, seconds of the ``match`` call) is printed. Bad input: one ``error:`` line
naming the file or argument, exit code 2.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .cli import ArgumentParser, add_matcher_arguments, run_command
from .data.images import parse_resize, read_image, resize_image, unscale_keypoints
from .errors import InputError
from .io import atomic_path
from .matchers import load_matcher, parse_matcher_options, wants_grayscale

MIN_SIDE = 16  #: smaller images are refused: two 1/8 coarse cells per side at least
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MATCH_SUFFIXES = (".npz", ".txt")
COLOURS = ("confidence", "plain")


def build_parser(prog: str = "imatch match") -> argparse.ArgumentParser:
    """The CLI options (see module docstring)."""
    p = ArgumentParser(prog=prog, description="Match two images; draw and/or save the matches.")
    p.add_argument("image0", help="first image")
    p.add_argument("image1", help="second image")
    add_matcher_arguments(p, "s2ld")
    p.add_argument("--resize", default=None, help="none, longer side (int) or WxH (default none)")
    p.add_argument("--out", default=None, help="PNG/JPEG picture of the matches")
    p.add_argument("--color", choices=COLOURS, default="confidence",
                   help="line colours: by confidence (blue low, red high) or plain green")
    p.add_argument("--max-draw", type=int, default=1000, help="draw at most N matches (random subset)")
    p.add_argument("--save-matches", default=None, help="write the matches to FILE.npz or FILE.txt")
    return p


def check_output(path: str | Path, option: str, suffixes: Sequence[str]) -> Path:
    """Check that ``path`` has one of ``suffixes`` and that its folder can be created and written.

    Raises:
        InputError: wrong suffix, a directory, or an unwritable folder (names ``option`` and path).
    """
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise InputError(f"{option}: {path}: expected a {' or '.join(suffixes)} file")
    if path.is_dir():
        raise InputError(f"{option}: {path} is a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as err:
        raise InputError(f"{option}: cannot write to {path.parent} ({err.strerror or err})") from None
    return path


def save_matches(path: Path, kpts0: np.ndarray, kpts1: np.ndarray, confidence: np.ndarray) -> None:
    """Write (N, 2), (N, 2), (N,) matches atomically as ``.npz`` (three arrays) or ``.txt`` (N rows)."""
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".npz":
            np.savez(tmp, kpts0=kpts0, kpts1=kpts1, confidence=confidence)
        else:
            rows = np.concatenate([kpts0, kpts1, confidence[:, None]], axis=1).reshape(-1, 5)
            np.savetxt(tmp, rows, fmt="%.4f %.4f %.4f %.4f %.6g",
                       header="x0 y0 x1 y1 confidence (original-image pixels, integer = pixel centre)")


def draw(image0: np.ndarray, image1: np.ndarray, kpts0: np.ndarray, kpts1: np.ndarray,
         confidence: np.ndarray, path: Path, text: str, max_draw: int, color: str) -> None:
    """Save the pair side by side with (at most ``max_draw``) match lines.

    ``plain``: every line green. ``confidence``: the TURBO colour map of the confidence (min-max over
    the drawn matches, low confidence first, so the most confident lines are on top). Both through
    :func:`~imatch_s2ld.eval.viz.draw_matches`.

    Args:
        image0, image1: (H, W, 3) RGB or (H, W) uint8; kpts0, kpts1: (N, 2) pixels; confidence: (N,).
    Raises:
        InputError: the picture could not be written.
    """
    import cv2

    from .eval.viz import draw_matches

    if color == "plain":
        draw_matches(image0, image1, kpts0, kpts1, np.ones(len(kpts0), bool), path, text, max_lines=max_draw)
    else:
        idx = np.arange(len(kpts0))
        if len(idx) > max_draw:
            idx = np.sort(np.random.default_rng(0).choice(idx, max_draw, replace=False))
        lo, hi = (float(confidence[idx].min()), float(confidence[idx].max())) if len(idx) else (0.0, 1.0)
        text = f"{text}, confidence {lo:.2g} (blue) to {hi:.2g} (red)"
        level = np.clip((confidence[idx] - lo) / max(hi - lo, 1e-12), 0.0, 1.0) if hi > lo \
            else np.ones(len(idx))
        rank = np.argsort(level, kind="stable")  # most confident drawn last, on top
        order = idx[rank]
        colours = np.zeros((0, 3), np.uint8) if not len(idx) else \
            cv2.applyColorMap((level[rank] * 255).astype(np.uint8)[:, None], cv2.COLORMAP_TURBO)[:, 0]
        draw_matches(image0, image1, kpts0[order], kpts1[order], np.ones(len(order), bool), path, text,
                     max_lines=len(order), colors=colours)
    if not path.is_file():
        raise InputError(f"--out: cannot write {path}")


def _short_name(matcher: str) -> str:
    """``"s2ld:/long/path/model.pt"`` -> ``"s2ld:model.pt"`` (for the picture's text band)."""
    base, _, arg = matcher.partition(":")
    return f"{base}:{Path(arg).name}" if arg else base


def _size_text(image: np.ndarray) -> str:
    return f"{image.shape[1]}x{image.shape[0]}"


def run(args: argparse.Namespace) -> str:
    """Match, draw and save as the parsed ``args`` ask; return the one-line summary.

    Raises:
        InputError: bad argument, matcher, image or output path (one line naming it).
    """
    resize = parse_resize(args.resize)
    if args.max_draw < 0:
        raise InputError(f"--max-draw: expected a count >= 0, got {args.max_draw}")
    out = check_output(args.out, "--out", IMAGE_SUFFIXES) if args.out else None
    save = check_output(args.save_matches, "--save-matches", MATCH_SUFFIXES) if args.save_matches else None
    matcher = load_matcher(args.matcher, **parse_matcher_options(args.matcher_opt))
    gray = wants_grayscale(matcher)
    image0, image1 = read_image(args.image0, gray), read_image(args.image1, gray)
    for path, image in ((args.image0, image0), (args.image1, image1)):
        if min(image.shape[:2]) < MIN_SIDE:
            raise InputError(f"{path}: {_size_text(image)} image is too small to match (at least {MIN_SIDE} "
                             "px per side)")
    small0, scale0 = resize_image(image0, resize)
    small1, scale1 = resize_image(image1, resize)
    start = time.perf_counter()
    k0, k1, conf = matcher.match(small0, small1)
    elapsed = time.perf_counter() - start
    kpts0, kpts1 = unscale_keypoints(k0, scale0), unscale_keypoints(k1, scale1)
    conf = np.asarray(conf, dtype=np.float32).reshape(-1)
    sizes = f"{_size_text(image0)} / {_size_text(image1)}"
    if resize is not None:
        sizes += f", matched at {_size_text(small0)} / {_size_text(small1)}"
    summary = f"{args.matcher}: {len(kpts0)} matches in {elapsed:.3f} s ({sizes})"
    written = []
    if out is not None:
        rgb0, rgb1 = (read_image(args.image0), read_image(args.image1)) if gray else (image0, image1)
        text = f"{_short_name(args.matcher)}: {len(kpts0)} matches"
        draw(rgb0, rgb1, kpts0, kpts1, conf, out, text, args.max_draw, args.color)
        written.append(str(out))
    if save is not None:
        save_matches(save, kpts0, kpts1, conf)
        written.append(str(save))
    return summary + (f"; wrote {', '.join(written)}" if written else "")


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit code (2 on :class:`InputError`)."""
    return run_command("imatch match", build_parser(), argv, lambda args: print(run(args)))


if __name__ == "__main__":
    sys.exit(main())
