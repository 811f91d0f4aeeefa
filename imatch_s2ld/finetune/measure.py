"""Geometry sources measured on a video: ``python scripts/measure_geometry_sources.py VIDEO``.

Every source reconstructs the same evenly spaced windows; per source: the windows that reconstruct and
pass the fine-tuning quality gate (with the reasons of the others) and, when the video has ground-truth
poses (COLMAP model), the window BA's relative-pose errors (rotation and translation direction,
degrees, over every registered frame pair). ``VIDEO``: a generated scene (``frames/``,
``intrinsics.txt``, ``gt_sparse/``), a COLMAP scene (``images/``, ``sparse/``: e.g. Strecha), or a
folder of frames (``--intrinsics``; no ground truth).
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
from .model import FinetuneModel, reason_counts
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


def scene_paths(video: str | Path, intrinsics: str | Path | None = None,
                gt: str | Path | None = None) -> tuple[Path, Path | None, Path | None]:
    """Frames folder, intrinsics file and ground-truth COLMAP model of ``video`` (see the module
    docstring); explicit ``intrinsics`` / ``gt`` win."""
    folder = Path(video)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder (a generated scene, a COLMAP scene or a folder of frames)")
    layouts = ((folder / "frames", folder / "intrinsics.txt", folder / "gt_sparse"),
               (folder / "images", folder / "sparse" / "cameras.txt", folder / "sparse"))
    frames, K_file, model = folder, folder / "intrinsics.txt", None
    for f, k, m in layouts:
        if f.is_dir():
            frames, K_file, model = f, k, m
            break
    K_path = Path(intrinsics) if intrinsics is not None else (K_file if K_file.is_file() else None)
    gt_path = Path(gt) if gt is not None else (model if model is not None and model.is_dir() else None)
    return frames, K_path, gt_path


def main(video: str | Path, sources: Sequence[str], windows: int = 12, length: int = 4, spacing: int = 4,
         checkpoint: str | Path = DEFAULT_CHECKPOINT, min_points: int = 80, resize: Any = None,
         intrinsics: str | Path | None = None, gt: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """Measure ``sources`` on ``windows`` evenly spaced windows of ``video`` (:func:`scene_paths`;
    ``resize``: the longer side of the frames, as ``--resize``). Returns per source: ``windows``,
    ``usable`` (reconstructed and through the quality gate), ``rot_deg`` / ``trans_deg`` (median and max
    over the frame pairs of the usable windows; None without ground truth), ``reasons`` of the others."""
    frames, K_path, gt_path = scene_paths(video, intrinsics, gt)
    vid = open_video(frames, resize=resize)
    K = resolve_intrinsics(vid, K_path).K
    data = VideoWindows(vid, K, length=length, spacing=spacing)
    truth = gt_poses(gt_path) if gt_path is not None else None
    if truth is not None and len(truth) != len(vid):
        raise InputError(f"{gt_path}: {len(truth)} ground-truth images for {len(vid)} frames in {frames}")
    net = S2LD.from_checkpoint(checkpoint)
    picked = evenly_spaced(len(data), windows)
    out = {}
    for source in sources:
        model = FinetuneModel(net, {"geometry_from": source, "min_points": min_points})
        rot, trans, failures, usable = [], [], [], 0
        for index in picked:
            rec = reconstruct(model, data[index])
            ok, reason = rec.success, rec.reason
            if ok:
                ok, reason = model._quality(rec, length)
            if not ok:
                failures.append(reason)
                continue
            usable += 1
            if truth is not None:
                r, t = pose_errors(rec, data.frames(index), truth)
                rot += r
                trans += t
        out[source] = {"windows": len(picked), "usable": usable, "rot_deg": _median_max(rot),
                       "trans_deg": _median_max(trans), "reasons": reason_counts(failures)}
    return out


def _median_max(values: list[float]) -> list[float] | None:
    return [round(float(np.median(values)), 3), round(float(np.max(values)), 3)] if values else None


def cli(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="measure_geometry_sources.py", description=__doc__.splitlines()[0])
    p.add_argument("video", type=Path, help="a generated scene (frames/, intrinsics.txt, gt_sparse/), a "
                   "COLMAP scene (images/, sparse/) or a folder of frames")
    p.add_argument("--sources", default="sift;aliked+lightglue;disk+lightglue;matcher;both",
                   help="semicolon-separated --geometry-from values (default: the basic sources and both)")
    p.add_argument("--windows", type=int, default=12)
    p.add_argument("--length", type=int, default=4)
    p.add_argument("--spacing", type=int, default=4)
    p.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    p.add_argument("--resize", type=int, default=None, help="longer side of the frames (default: as stored)")
    p.add_argument("--intrinsics", type=Path, default=None, help="3x3 text or COLMAP cameras.txt")
    p.add_argument("--gt", type=Path, default=None, help="COLMAP model with the ground-truth poses")
    args = p.parse_args(argv)
    sources = [s for s in args.sources.split(";") if s]
    try:
        result = main(args.video, sources, args.windows, args.length, args.spacing, args.checkpoint,
                      resize=args.resize, intrinsics=args.intrinsics, gt=args.gt)
    except InputError as err:
        p.exit(2, f"{p.prog}: error: {err}\n")
    print(json.dumps(result, indent=1))
    return 0
