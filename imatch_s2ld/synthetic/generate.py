"""End-to-end generation: scenes -> rendered views -> MegaDepth layout, videos, pairs files."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..data.scene_info import save_scene_info
from .cameras import intrinsics, sample_wide_views, video_trajectory
from .config import GeneratorConfig, resolve_config
from .overlap import pair_overlap
from .render import Renderer
from .scene import Scene, build_scene
from .textures import load_texture_folder
from .writers import (
    pairs_line,
    write_colmap_model,
    write_depth_h5,
    write_image,
    write_intrinsics_txt,
    write_text,
)

# Purposes of the per-scene random streams (``default_rng([seed, scene, purpose, ...])``).
_SCENE, _WIDE_POSES, _WIDE_NOISE, _VIDEO_POSES, _VIDEO_NOISE = 0, 1, 2, 3, 4
_EVAL_POSES, _EVAL_NOISE, _PAIR_PICK = 5, 6, 7


@dataclass
class GeneratedDataset:
    """Paths of what :func:`generate` wrote (all under ``root``) and render statistics."""

    root: Path
    config: GeneratorConfig
    scenes: list[str] = field(default_factory=list)
    scene_infos: list[Path] = field(default_factory=list)
    scene_list: Path | None = None
    pairs_files: list[Path] = field(default_factory=list)
    video_dirs: list[Path] = field(default_factory=list)
    eval_pairs_files: list[Path] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    views_rendered: int = 0
    render_seconds: float = 0.0

    @property
    def render_rate(self) -> float:
        """Rendered views per second (rendering + domain effects, without file writing)."""
        return self.views_rendered / max(self.render_seconds, 1e-9)


@dataclass
class _Views:
    images: list[np.ndarray]
    depths: list[np.ndarray]
    poses: list[np.ndarray]


def _render_all(
    renderer: Renderer,
    K: np.ndarray,
    poses: list[np.ndarray],
    cfg: GeneratorConfig,
    noise_seed: list[int],
    out: GeneratedDataset,
    bar: tqdm,
    workers: int,
) -> _Views:
    images, depths = [], []
    seeds = [[*noise_seed, k] for k in range(len(poses))]
    t0 = time.perf_counter()
    for image, depth in renderer.render_many(K, poses, cfg.domain, seeds, workers):
        images.append(image)
        depths.append(depth)
        bar.update(1)
    out.render_seconds += time.perf_counter() - t0
    out.views_rendered += len(poses)
    return _Views(images, depths, poses)


def _select_pairs(
    views: _Views, K: np.ndarray, cfg: GeneratorConfig, rng: np.random.Generator
) -> list[tuple[tuple[int, int], float, np.ndarray]]:
    """Pairs whose overlap falls in a configured bin, at most ``max_pairs_per_bin`` per bin.

    Returns ``((i, j), overlap, central_matches (4,))`` sorted by ``(i, j)``.
    """
    n = len(views.poses)
    scored = []
    for i in range(n):
        for j in range(i + 1, n):
            score, central = pair_overlap(
                views.depths[i], views.depths[j], K, K, views.poses[i], views.poses[j]
            )
            scored.append(((i, j), score, central))
    chosen = []
    for b, (lo, hi) in enumerate(cfg.overlap_bins):
        last = b == len(cfg.overlap_bins) - 1
        in_bin = [p for p in scored if lo <= p[1] < hi or (last and p[1] == hi)]
        if len(in_bin) > cfg.max_pairs_per_bin:
            keep = rng.choice(len(in_bin), cfg.max_pairs_per_bin, replace=False)
            in_bin = [in_bin[k] for k in sorted(keep)]
        chosen.extend(in_bin)
    return sorted(chosen, key=lambda p: p[0])


def _write_megadepth(
    root: Path,
    scene: Scene,
    views: _Views,
    K: np.ndarray,
    pairs: list,
    cfg: GeneratorConfig,
    out: GeneratedDataset,
) -> None:
    base = Path("Undistorted_SfM") / scene.name
    names = [f"{k:06d}.jpg" for k in range(len(views.poses))]
    image_paths = [str(base / "images" / n) for n in names]
    depth_paths = [str(base / "depths" / f"{k:06d}.h5") for k in range(len(names))]
    for img, depth, ip, dp in zip(views.images, views.depths, image_paths, depth_paths):
        out.files.append(write_image(root / ip, img, cfg.jpeg_quality))
        out.files.append(write_depth_h5(root / dp, depth))
    info = root / "scene_info" / f"{scene.name}.npz"
    save_scene_info(
        info,
        image_paths,
        depth_paths,
        [K.copy() for _ in names],
        [T.copy() for T in views.poses],
        pairs,
    )
    out.scene_infos.append(info)
    out.files.append(info)
    out.pairs_files.append(_write_pairs(root / base, names, K, views, pairs, out))


def _write_pairs(
    folder: Path, names: list[str], K: np.ndarray, views: _Views, pairs: list, out: GeneratedDataset
) -> Path:
    """``folder/pairs_with_gt.txt`` for ``pairs`` (``((i, j), overlap, central)``) of ``views``."""
    lines = [
        pairs_line(names[i], names[j], K, K, views.poses[i], views.poses[j])
        for (i, j), _, _ in pairs
    ]
    pairs_file = write_text(folder / "pairs_with_gt.txt", "".join(x + "\n" for x in lines))
    out.files.append(pairs_file)
    return pairs_file


def _write_video(
    root: Path,
    scene: Scene,
    views: _Views,
    K: np.ndarray,
    cfg: GeneratorConfig,
    out: GeneratedDataset,
) -> Path:
    folder = root / "video" / scene.name
    names = [f"{k:06d}.png" for k in range(len(views.poses))]
    for name, img, depth in zip(names, views.images, views.depths):
        out.files.append(write_image(folder / "frames" / name, img))
        out.files.append(write_depth_h5(folder / "gt_depths" / name.replace(".png", ".h5"), depth))
    out.files.append(write_intrinsics_txt(folder / "intrinsics.txt", K))
    w, h = cfg.size
    gt = write_colmap_model(folder / "gt_sparse", names, K, views.poses, w, h)
    out.files += [gt / "cameras.txt", gt / "images.txt", gt / "points3D.txt"]
    out.video_dirs.append(folder)
    return folder


def _write_eval(
    folder: Path, views: _Views, K: np.ndarray, pairs: list, out: GeneratedDataset
) -> None:
    names = [f"{k:06d}.png" for k in range(len(views.poses))]
    for name, img, depth in zip(names, views.images, views.depths):
        out.files.append(write_image(folder / "images" / name, img))
        out.files.append(write_depth_h5(folder / "depths" / name.replace(".png", ".h5"), depth))
    out.eval_pairs_files.append(_write_pairs(folder, names, K, views, pairs, out))


def _generate_scene(
    cfg: GeneratorConfig,
    s: int,
    seed: int,
    user_textures: list[np.ndarray] | None,
    out: GeneratedDataset,
    bar: tqdm,
    workers: int,
) -> None:
    """Build scene ``s``, render its wide-baseline views / video / eval views and write them."""
    layout = cfg.layouts[s % len(cfg.layouts)]
    name = f"{layout}_{s:04d}"
    rng = np.random.default_rng([seed, s, _SCENE])
    scene = build_scene(layout, name, rng, cfg.domain, cfg.texture_density, user_textures)
    w, h = cfg.size
    K = intrinsics(w, h, cfg.hfov_deg)
    renderer = Renderer(scene, w, h)
    out.scenes.append(name)

    def render(poses: list[np.ndarray], purpose: int) -> _Views:
        return _render_all(renderer, K, poses, cfg, [seed, s, purpose], out, bar, workers)

    if cfg.views:
        rng = np.random.default_rng([seed, s, _WIDE_POSES])
        views = render(sample_wide_views(scene.hints, cfg.views, rng), _WIDE_NOISE)
        pairs = _select_pairs(views, K, cfg, np.random.default_rng([seed, s, _PAIR_PICK]))
        _write_megadepth(out.root, scene, views, K, pairs, cfg, out)
    if cfg.video_frames:
        step = cfg.video_step or (0.12 if layout == "facade" else 0.04)
        rng = np.random.default_rng([seed, s, _VIDEO_POSES])
        views = render(video_trajectory(scene.hints, cfg.video_frames, step, rng), _VIDEO_NOISE)
        folder = _write_video(out.root, scene, views, K, cfg, out)
        if cfg.eval_views:
            rng = np.random.default_rng([seed, s, _EVAL_POSES])
            views = render(sample_wide_views(scene.hints, cfg.eval_views, rng), _EVAL_NOISE)
            pairs = _select_pairs(views, K, cfg, np.random.default_rng([seed, s, _PAIR_PICK, 1]))
            _write_eval(folder / "eval", views, K, pairs, out)


def generate(
    preset: str | GeneratorConfig,
    out_dir: str | Path,
    seed: int = 0,
    progress: bool = True,
    workers: int = 2,
    **overrides: object,
) -> GeneratedDataset:
    """Render a synthetic dataset and write it under ``out_dir`` (layout: see the package doc).

    Args:
        preset: preset name (see :data:`PRESETS`) or a :class:`GeneratorConfig`.
        out_dir: output root (created; existing files with the same names are replaced).
        seed: the whole output is a deterministic function of ``(config, seed)``.
        progress: show a tqdm progress bar.
        workers: render threads (results do not depend on it).
        **overrides: :class:`GeneratorConfig` fields (``domain`` may be a dict of domain fields).

    Raises:
        InputError: unknown preset/option, bad value, unusable ``textures`` folder.
    """
    cfg = resolve_config(preset, **overrides)
    root = Path(out_dir)
    user_textures = load_texture_folder(cfg.textures) if cfg.textures else None
    root.mkdir(parents=True, exist_ok=True)
    out = GeneratedDataset(root=root, config=cfg)
    per_scene = cfg.views + cfg.video_frames + (cfg.eval_views if cfg.video_frames else 0)
    total = per_scene * cfg.num_scenes
    with tqdm(total=total, desc="rendering", unit="view", disable=not progress) as bar:
        for s in range(cfg.num_scenes):
            _generate_scene(cfg, s, seed, user_textures, out, bar, workers)
    if out.scene_infos:
        listing = "".join(p.name + "\n" for p in out.scene_infos)
        out.scene_list = write_text(root / "scene_info" / "scene_list.txt", listing)
        out.files.append(out.scene_list)
    meta = {"seed": seed, "config": asdict(cfg), "scenes": out.scenes}
    out.files.append(
        write_text(
            root / "synthetic_config.json", json.dumps(meta, indent=2, sort_keys=True) + "\n"
        )
    )
    return out
