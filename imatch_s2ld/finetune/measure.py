"""Geometry sources measured against ground truth: ``python scripts/measure_geometry_sources.py``.

For a video with ground-truth poses (a generated scene's ``gt_sparse/``, COLMAP), every source
reconstructs the same evenly spaced windows; per source: the windows that reconstruct and pass the
fine-tuning quality gate, and the window BA's relative-pose errors (rotation and translation
direction, degrees, over every registered frame pair) against the ground truth.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pycolmap

from ..ba import reconstruct_window
from ..ba.pipeline import WindowReconstruction
from ..errors import InputError
from ..models.s2ld import DEFAULT_CHECKPOINT, S2LD
from .data import VideoWindows, evenly_spaced
from .intrinsics import resolve_intrinsics
from .model import FinetuneModel
from .video import open_video
from .window import match_window, window_pairs


def gt_poses(model_dir: str | Path) -> list[np.ndarray]:
    """World-to-camera 4x4 poses of a COLMAP model's images, in image-name order (= frame order)."""
    if not (Path(model_dir) / "images.txt").is_file() and not (Path(model_dir) / "images.bin").is_file():
        raise InputError(f"{model_dir}: no COLMAP model (images.txt / images.bin) with the ground truth")
    rec = pycolmap.Reconstruction(str(model_dir))
    poses = {}
    for image in rec.images.values():
        T = np.eye(4)
        T[:3, :4] = image.cam_from_world().matrix()
        poses[image.name] = T
    return [poses[name] for name in sorted(poses)]


def pose_errors(rec: WindowReconstruction, frames: Sequence[int],
                gt: Sequence[np.ndarray]) -> tuple[list[float], list[float]]:
    """Rotation and translation-direction errors (degrees) of every registered frame pair of a
    window's BA (``frames``: the window's video frame indices) against ``gt`` poses."""
    poses = rec.ba.poses.detach().double().cpu().numpy()
    slot = {int(f): k for k, f in enumerate(rec.init.frames)}
    rot, trans = [], []
    for a in sorted(slot):
        for b in sorted(slot):
            if a >= b:
                continue
            T = poses[slot[b]] @ np.linalg.inv(poses[slot[a]])
            G = gt[frames[b]] @ np.linalg.inv(gt[frames[a]])
            dR = T[:3, :3] @ G[:3, :3].T
            rot.append(float(np.degrees(np.arccos(np.clip((np.trace(dR) - 1) / 2, -1, 1)))))
            t, g = T[:3, 3], G[:3, 3]
            cos = abs(t @ g) / max(np.linalg.norm(t) * np.linalg.norm(g), 1e-12)
            trans.append(float(np.degrees(np.arccos(np.clip(cos, -1, 1)))))
    return rot, trans


def reconstruct(model: FinetuneModel, item: dict[str, Any]) -> WindowReconstruction:
    """A window's reconstruction from ``model``'s geometry source (with the current matcher)."""
    if not model.source.uses_matcher:
        return model.independent_reconstruction(item["images"], item["K"])
    pairs = window_pairs(item["images"].shape[0], model.conf["max_gap"])
    matches = model.geometry_matches(item["images"], pairs, match_window(model.net, item["images"], pairs))
    return reconstruct_window(matches.keypoints, matches.pairs, item["K"].double(),
                              model.conf["reconstruction"])


def main(video: str | Path, sources: Sequence[str], windows: int = 12, length: int = 4, spacing: int = 4,
         checkpoint: str | Path = DEFAULT_CHECKPOINT, min_points: int = 80) -> dict[str, dict[str, Any]]:
    """Measure ``sources`` on ``windows`` evenly spaced windows of a generated video scene folder
    (``frames/``, ``intrinsics.txt``, ``gt_sparse/``). Returns per source: ``windows``, ``usable``
    (reconstructed and through the quality gate), ``rot_deg`` / ``trans_deg`` (median and max over
    the frame pairs of the usable windows), ``reasons`` of the others."""
    folder = Path(video)
    vid = open_video(folder / "frames")
    K = resolve_intrinsics(vid, folder / "intrinsics.txt").K
    data = VideoWindows(vid, K, length=length, spacing=spacing)
    gt = gt_poses(folder / "gt_sparse")
    net = S2LD.from_checkpoint(checkpoint)
    picked = evenly_spaced(len(data), windows)
    out = {}
    for source in sources:
        model = FinetuneModel(net, {"geometry_from": source, "min_points": min_points})
        rot, trans, reasons, usable = [], [], {}, 0
        for index in picked:
            rec = reconstruct(model, data[index])
            ok, reason = rec.success, rec.reason
            if ok:
                ok, reason = model._quality(rec, length)
            if not ok:
                reasons[reason.split("(")[0].strip()] = reasons.get(reason.split("(")[0].strip(), 0) + 1
                continue
            usable += 1
            r, t = pose_errors(rec, data.frames(index), gt)
            rot += r
            trans += t
        out[source] = {"windows": len(picked), "usable": usable, "rot_deg": _median_max(rot),
                       "trans_deg": _median_max(trans), "reasons": reasons}
    return out


def _median_max(values: list[float]) -> list[float] | None:
    return [round(float(np.median(values)), 3), round(float(np.max(values)), 3)] if values else None


def cli(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="measure_geometry_sources.py", description=__doc__.splitlines()[0])
    p.add_argument("video", type=Path, help="a generated video scene (frames/, intrinsics.txt, gt_sparse/)")
    p.add_argument("--sources", default="sift;aliked+lightglue;disk+lightglue;matcher;both",
                   help="semicolon-separated --geometry-from values (default: the basic sources and both)")
    p.add_argument("--windows", type=int, default=12)
    p.add_argument("--length", type=int, default=4)
    p.add_argument("--spacing", type=int, default=4)
    p.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    args = p.parse_args(argv)
    sources = [s for s in args.sources.split(";") if s]
    try:
        result = main(args.video, sources, args.windows, args.length, args.spacing, args.checkpoint)
    except InputError as err:
        p.exit(2, f"{p.prog}: error: {err}\n")
    print(json.dumps(result, indent=1))
    return 0
