"""Camera intrinsics, look-at poses, wide-baseline view sampling and smooth video trajectories."""

from __future__ import annotations

import numpy as np

from .layouts import CameraHints

WORLD_UP = np.array([0.0, 0.0, 1.0])


def intrinsics(width: int, height: int, hfov_deg: float) -> np.ndarray:
    """Pinhole K (3, 3) with horizontal field of view ``hfov_deg`` and the principal point at the
    image centre ``((W - 1) / 2, (H - 1) / 2)`` (pixel-centre convention)."""
    f = (width / 2) / np.tan(np.deg2rad(hfov_deg) / 2)
    return np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1.0]])


def look_at(eye: np.ndarray, target: np.ndarray, roll: float = 0.0) -> np.ndarray:
    """World-to-camera pose (4, 4) of a camera at ``eye`` looking at ``target`` (z up, no roll
    except ``roll`` radians about the optical axis). Camera frame: x right, y down, z forward."""
    z = target - eye
    z = z / np.linalg.norm(z)
    x = np.cross(z, WORLD_UP)  # right (= down x forward)
    if np.linalg.norm(x) < 1e-6:  # looking straight up/down: any right vector
        x = np.cross(z, np.array([0.0, 1.0, 0.0]))
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    if roll:
        c, s = np.cos(roll), np.sin(roll)
        x, y = c * x + s * y, -s * x + c * y
    R = np.stack([x, y, z])
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, -R @ eye
    return T


def _eye_ok(eye: np.ndarray, hints: CameraHints) -> bool:
    if np.any(eye < hints.eye_lo) or np.any(eye > hints.eye_hi):
        return False
    ob = hints.obstacles
    inside = (ob[:, 0] < eye[0]) & (eye[0] < ob[:, 2]) & (ob[:, 1] < eye[1]) & (eye[1] < ob[:, 3])
    return not inside.any()


def sample_wide_views(
    hints: CameraHints, n_views: int, rng: np.random.Generator, n_clusters: int = 3
) -> list[np.ndarray]:
    """World-to-camera poses (4, 4) looking at a few focus clusters from varied positions.

    Views share ``n_clusters`` focus points so that many pairs overlap, with baselines and
    viewing angles spread widely (overlap is measured and binned later).
    """
    picks = rng.choice(
        len(hints.focus_points), size=min(n_clusters, len(hints.focus_points)), replace=False
    )
    poses: list[np.ndarray] = []
    dmin, dmax = hints.distance
    tries = 0
    while len(poses) < n_views:
        tries += 1
        if tries > 1000 * n_views:
            raise RuntimeError("no valid camera position found (layout hints too restrictive)")
        k = (
            picks[len(poses) % len(picks)]
            if tries < 200 * n_views
            else rng.integers(len(hints.focus_points))
        )
        focus, normal = hints.focus_points[k], hints.focus_normals[k]
        yaw = rng.uniform(-1.0, 1.0)  # radians around the surface normal
        c, s = np.cos(yaw), np.sin(yaw)
        d = np.array([c * normal[0] - s * normal[1], s * normal[0] + c * normal[1], 0.0])
        dist = dmin * (dmax / dmin) ** rng.random()
        eye = focus + d * dist
        eye[2] = rng.uniform(hints.eye_lo[2], hints.eye_hi[2])
        if not _eye_ok(eye, hints):
            continue
        spread = 0.15 * dist
        target = focus + rng.normal(0.0, spread, 3) * np.array([1, 1, 0.5])
        poses.append(look_at(eye, target, roll=rng.normal(0.0, 0.04)))
    return poses


def _catmull_rom(points: np.ndarray, closed: bool, samples_per_seg: int = 50) -> np.ndarray:
    """Dense centripetal-free (uniform) Catmull-Rom curve through ``points`` (P, D)."""
    p = (
        np.concatenate([points[-1:], points, points[:2]])
        if closed
        else np.concatenate([2 * points[:1] - points[1:2], points, 2 * points[-1:] - points[-2:-1]])
    )
    n_seg = len(points) if closed else len(points) - 1
    t = np.linspace(0, 1, samples_per_seg, endpoint=False)[:, None]
    out = []
    for i in range(n_seg):
        p0, p1, p2, p3 = p[i], p[i + 1], p[i + 2], p[i + 3]
        out.append(
            0.5
            * (
                (2 * p1)
                + (-p0 + p2) * t
                + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3
            )
        )
    if not closed:
        out.append(points[-1:])
    return np.concatenate(out)


def video_trajectory(
    hints: CameraHints, n_frames: int, step: float, rng: np.random.Generator
) -> list[np.ndarray]:
    """Smooth walk of ``n_frames`` world-to-camera poses (4, 4), ``step`` metres per frame.

    The camera centre follows a Catmull-Rom spline through the layout's walk points at constant
    speed; the viewing yaw follows a spline through the walk's preferred yaws, with a gentle pitch
    oscillation, so both position and orientation change smoothly and slowly.
    """
    yaw = np.unwrap(hints.look_yaw)
    curve = _catmull_rom(np.column_stack([hints.walk, yaw]), hints.walk_closed)
    seg = np.linalg.norm(np.diff(curve[:, :3], axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    start = rng.uniform(0, max(arc[-1] - step * n_frames, 0.0))
    if hints.walk_closed:
        s = (start + step * np.arange(n_frames)) % arc[-1]
    else:
        s = np.clip(start + step * np.arange(n_frames), 0, arc[-1])
    state = np.stack([np.interp(s, arc, curve[:, k]) for k in range(4)], axis=1)
    phase = rng.uniform(0, 2 * np.pi)
    pitch = 0.12 + 0.08 * np.sin(phase + np.arange(n_frames) * step * 0.7)
    poses = []
    for (x, y, z, a), p in zip(state, pitch):
        eye = np.array([x, y, z])
        forward = np.array([np.cos(a) * np.cos(p), np.sin(a) * np.cos(p), np.sin(p)])
        poses.append(look_at(eye, eye + forward))
    return poses
