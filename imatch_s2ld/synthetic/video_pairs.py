"""Evaluation pairs from a rendered video: frames ``(i, i + gap)`` with their exact relative pose.

The generator's held-out ``eval/`` views are wide-baseline (MegaDepth-like); these pairs follow the
baselines a moving camera produces, which is what fine-tuning on a video can be judged on. Use the
video of a scene that fine-tuning never sees.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..data.colmap import ColmapPairsConfig, read_colmap_pairs
from ..data.pairs_file import write_pairs_file
from ..errors import InputError

__all__ = ["write_video_pairs"]


def write_video_pairs(scene_dir: str | Path, out: str | Path, gaps: Sequence[int] = (4, 8, 12, 16),
                      every: int = 2) -> Path:
    """Write ``out`` (``pairs_with_gt.txt`` format; image names relative to ``scene_dir/frames``).

    Args:
        scene_dir: a generated video scene (``frames/``, ``gt_sparse/``).
        gaps: frame gaps of the pairs; every: first frames ``0, every, 2 * every, ...``.
    Returns:
        ``out``.
    Raises:
        InputError: not a generated video scene, or no pair.
    """
    scene = Path(scene_dir)
    if not (scene / "gt_sparse").is_dir() or not (scene / "frames").is_dir():
        raise InputError(f"{scene}: not a generated video scene (needs frames/ and gt_sparse/)")
    samples = read_colmap_pairs(scene / "gt_sparse", scene / "frames", ColmapPairsConfig(max_angle_deg=180.0))
    names = sorted({s.name0 for s in samples} | {s.name1 for s in samples})
    index = {n: i for i, n in enumerate(names)}
    wanted = {int(g) for g in gaps}
    picked = [s for s in samples
              if index[s.name1] - index[s.name0] in wanted and index[s.name0] % max(1, int(every)) == 0]
    if not picked:
        raise InputError(f"{scene}: no frame pair with a gap in {sorted(wanted)}")
    return write_pairs_file(out, picked)
