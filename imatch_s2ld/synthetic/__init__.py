"""Synthetic multi-view scenes with exact ground truth, rendered by the project itself.

Scenes are planar textured rectangles ("quads"): an outdoor **facade** layout (ground tiles, two
rows of building boxes at different depths, street boxes, sky = depth 0) and an indoor **room**
layout (floor, ceiling, walls, posters, furniture boxes). Textures are procedural (families
``noise``, ``stripes``, ``bricks``, ``blobs``, ``text``, coloured variants) or random crops of a
user folder (``--textures DIR``). The renderer (:mod:`.render`) evaluates each quad's
pixel-to-texture homography per pixel: depth is analytic (camera z, 0 = nothing), integer pixel
coordinates are pixel centres (OpenCV), poses are world-to-camera 4x4. Appearance "domains"
(:class:`Domain`: texture mix, lighting, exposure/gamma, blur, noise, fog, low light, colour cast)
never change geometry. Output is a deterministic function of ``(preset/config, seed)``: the same
seed gives byte-identical files.

Command line (``scripts/generate_synthetic.py`` is the same)::

    python -m imatch_s2ld.synthetic --preset default --out DIR [--seed 0] [--textures DIR]
        [--num-scenes N] [--views N] [--frames N] [--eval-views N] [--size 640x480]
        [--workers 2] [--quiet] [--list-presets]

Bad input (unknown preset, bad value, empty ``--textures`` folder) prints one line and exits 2.
Python: ``generate("default", out_dir, seed=0, views=20, domain={"fog_density": 0.02})``.
Existing files of an earlier run in ``out_dir`` are replaced when their names repeat, never
deleted: use a fresh folder for a smaller run.

Presets (``python -m imatch_s2ld.synthetic --list-presets``):

- ``default``: 2 scenes (facade, room) x 12 wide-baseline views + a 16-frame video and 6 eval
  views each, 640x480; a few seconds on 2 cores (demos, tests).
- ``facade`` / ``room``: 4 scenes x 40 wide-baseline views of one layout (training data).
- ``mixed``: 8 scenes (facade, room alternating) x 40 views.
- ``target-fog``: a different domain (fog, blur, noise, desaturated blobs/text textures) as a
  200-frame street video + 16 held-out eval views with GT pairs.
- ``target-night``: dark, noisy, motion-blurred, warm-cast rooms lit by a headlight; 200-frame
  video + 16 held-out eval views.

Output layout (``<out>`` = ``out_dir``; ``<scene>`` = e.g. ``facade_0000``)::

    <out>/
      synthetic_config.json                    # seed + resolved config (no timestamps)
      scene_info/<scene>.npz                   # LoFTR/MegaDepth index (save_scene_info)
      scene_info/scene_list.txt                # names of the .npz files, one per line
      Undistorted_SfM/<scene>/images/000000.jpg
      Undistorted_SfM/<scene>/depths/000000.h5 # dataset "depth", float32 (H, W), 0 = none
      Undistorted_SfM/<scene>/pairs_with_gt.txt  # names relative to .../<scene>/images/
      video/<scene>/frames/000000.png          # ordered video frames
      video/<scene>/intrinsics.txt             # 3x3 K, 3 lines, row-major
      video/<scene>/gt_sparse/{cameras,images,points3D}.txt  # GT poses (COLMAP text, cx+0.5)
      video/<scene>/gt_depths/000000.h5        # GT depth of each frame (evaluation only)
      video/<scene>/eval/images/000000.png     # held-out wide-baseline views, same domain
      video/<scene>/eval/depths/000000.h5
      video/<scene>/eval/pairs_with_gt.txt     # names relative to eval/images/

``scene_info`` paths are relative to ``<out>``; ``pair_infos`` hold ``((i, j), overlap,
central_matches)`` with overlap = min over both directions of the share of depth-valid pixels
(8-px grid) that are co-visible (depth-warping test), and ``central_matches = (x0, y0, x1, y1)``
the co-visible grid pixel nearest the centroid of the co-visible area and its exact warp.
``pairs_with_gt.txt`` lines: ``name0 name1 0 0 K0(9) K1(9) T_0to1(16)``, row-major,
``T_0to1 = T_1w @ inv(T_0w)``.

Public API: :func:`generate`, :class:`GeneratedDataset`, :class:`GeneratorConfig`,
:data:`PRESETS`, :func:`resolve_config`, :class:`Domain`, :func:`build_scene`, :class:`Scene`,
:class:`Renderer`, :func:`world_points`, :func:`intrinsics`, :func:`look_at`,
:func:`sample_wide_views`, :func:`video_trajectory`, :func:`pair_overlap`, :func:`make_texture`,
:func:`main` (CLI).
"""

from __future__ import annotations

from .cameras import intrinsics, look_at, sample_wide_views, video_trajectory
from .cli import main
from .config import PRESETS, GeneratorConfig, resolve_config
from .domain import Domain
from .generate import GeneratedDataset, generate
from .overlap import pair_overlap
from .render import Renderer, world_points
from .scene import Scene, build_scene
from .textures import FAMILIES, make_texture

__all__ = [
    "FAMILIES",
    "PRESETS",
    "Domain",
    "GeneratedDataset",
    "GeneratorConfig",
    "Renderer",
    "Scene",
    "build_scene",
    "generate",
    "intrinsics",
    "look_at",
    "main",
    "make_texture",
    "pair_overlap",
    "resolve_config",
    "sample_wide_views",
    "video_trajectory",
    "world_points",
]
