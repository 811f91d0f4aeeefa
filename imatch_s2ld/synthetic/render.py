"""Fast exact renderer of textured quads (numpy + OpenCV, no per-pixel Python loops).

For a quad ``X = O + s S + t T`` seen by a camera ``(K, R, t)``, pixels relate to texture
coordinates by the homography ``H = K [S_c T_c O_c]`` (camera-frame columns), so with
``G = H^-1`` and a pixel ``p = (u, v, 1)`` (integer ``u, v`` = pixel centre, OpenCV convention):

    1 / z = g2 . p,     s = (g0 . p) z,     t = (g1 . p) z

are ratios of linear functions of ``(u, v)``: depth is exact (analytic) at every pixel centre.
Each quad is evaluated on its projected bounding box, masked by ``z > near``, ``(s, t)`` in
``[0, 1]^2`` and a z-buffer test. Textures are sampled once per view with ``cv2.remap`` from an
atlas holding every texture's mipmap pyramid; the level is picked per pixel from the homography's
area scale (``|det G| z^3``) to avoid aliasing.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

from .domain import Domain, apply_domain
from .scene import Scene

NEAR = 0.05  # metres
_PAD = 2  # border texels around each atlas tile (bilinear taps stay inside the tile)
_EPS = 1e-5  # (s, t) tolerance so that neighbouring tiles leave no cracks
_MAX_LEVELS = 8


@dataclass(frozen=True)
class TextureAtlas:
    """All textures and their mip levels packed in one image.

    Attributes:
        image: uint8 (AH, AW, 3).
        tiles: float32 (Q * L, 4) rows ``(x0, y0, w, h)`` of level ``l`` of texture ``q`` at row
            ``q * L + l`` (levels past a texture's last repeat the last one).
        levels: int32 (Q,) number of levels per texture.
        num_levels: ``L``.
    """

    image: np.ndarray
    tiles: np.ndarray
    levels: np.ndarray
    num_levels: int


def build_atlas(textures: tuple[np.ndarray, ...] | list[np.ndarray]) -> TextureAtlas:
    """Pack textures (each uint8 (h, w, 3)) with their ``pyrDown`` pyramids into one atlas."""
    pyramids = []
    for tex in textures:
        levels = [tex]
        while len(levels) < _MAX_LEVELS and min(levels[-1].shape[:2]) >= 8:
            levels.append(cv2.pyrDown(levels[-1]))
        pyramids.append(levels)
    # Block of one texture: level 0 on the left, the smaller levels stacked on its right.
    blocks = []
    for levels in pyramids:
        h0, w0 = levels[0].shape[:2]
        right_w = max(lv.shape[1] for lv in levels[1:]) + 2 * _PAD if len(levels) > 1 else 0
        right_h = sum(lv.shape[0] + 2 * _PAD for lv in levels[1:])
        blocks.append((w0 + 2 * _PAD + right_w, max(h0 + 2 * _PAD, right_h)))
    atlas_w = max(4096, max(b[0] for b in blocks))
    # Shelf packing, tallest blocks first.
    order = sorted(range(len(blocks)), key=lambda k: -blocks[k][1])
    pos: dict[int, tuple[int, int]] = {}
    x = y = shelf_h = 0
    for k in order:
        bw, bh = blocks[k]
        if x + bw > atlas_w:
            x, y, shelf_h = 0, y + shelf_h, 0
        pos[k] = (x, y)
        x += bw
        shelf_h = max(shelf_h, bh)
    image = np.zeros((y + shelf_h, atlas_w, 3), np.uint8)
    tiles = np.zeros((len(textures), _MAX_LEVELS, 4), np.float32)
    for k, levels in enumerate(pyramids):
        bx, by = pos[k]
        h0, w0 = levels[0].shape[:2]
        ty = by
        for lvl, img in enumerate(levels):
            h, w = img.shape[:2]
            x0, y0 = (bx, by) if lvl == 0 else (bx + w0 + 2 * _PAD, ty)
            padded = cv2.copyMakeBorder(img, _PAD, _PAD, _PAD, _PAD, cv2.BORDER_REPLICATE)
            image[y0 : y0 + h + 2 * _PAD, x0 : x0 + w + 2 * _PAD] = padded
            tiles[k, lvl] = (x0 + _PAD, y0 + _PAD, w, h)
            if lvl > 0:
                ty += h + 2 * _PAD
        tiles[k, len(levels) :] = tiles[k, len(levels) - 1]
    levels_arr = np.array([len(p) for p in pyramids], np.int32)
    return TextureAtlas(image, tiles.reshape(-1, 4), levels_arr, _MAX_LEVELS)


@dataclass(frozen=True)
class Rendering:
    """Raw output of the rasteriser for one view.

    Attributes:
        albedo: uint8 (H, W, 3) sampled textures (black where nothing was hit).
        depth: float32 (H, W) camera z, 0 where nothing was hit.
        quad_id: int32 (H, W) visible quad, -1 where nothing was hit.
    """

    albedo: np.ndarray
    depth: np.ndarray
    quad_id: np.ndarray


def _clip_near(corners: np.ndarray) -> np.ndarray:
    """Clip a convex polygon (n, 3) in camera coordinates to ``z >= NEAR``."""
    out = []
    n = len(corners)
    for k in range(n):
        a, b = corners[k], corners[(k + 1) % n]
        if a[2] >= NEAR:
            out.append(a)
        if (a[2] >= NEAR) != (b[2] >= NEAR):
            out.append(a + (NEAR - a[2]) / (b[2] - a[2]) * (b - a))
    return np.asarray(out).reshape(-1, 3)


class Renderer:
    """Renders views of one :class:`Scene` at a fixed image size."""

    def __init__(self, scene: Scene, width: int, height: int) -> None:
        self.scene = scene
        self.width, self.height = width, height
        self.atlas = build_atlas(scene.textures)
        self._u = np.arange(width, dtype=np.float32)
        self._v = np.arange(height, dtype=np.float32)
        tex_wh = np.array([t.shape[1::-1] for t in scene.textures], np.float64)
        self._tex_area = tex_wh[:, 0] * tex_wh[:, 1]

    def rasterize(self, K: np.ndarray, T_cw: np.ndarray) -> Rendering:
        """Visibility, exact depth and texture sampling for a camera.

        Args:
            K: (3, 3) intrinsics (pixel-centre convention).
            T_cw: (4, 4) world-to-camera pose.
        """
        W, H = self.width, self.height
        quads, boxes, G, det_g = self._cull(K, T_cw)
        zbuf = np.full((H, W), np.inf, np.float32)
        qid = np.full((H, W), -1, np.int32)
        s_map = np.zeros((H, W), np.float32)
        t_map = np.zeros((H, W), np.float32)
        G32 = G.astype(np.float32)
        for q, (x0, x1, y0, y1) in zip(quads, boxes):
            g = G32[q]
            us, vs = self._u[x0:x1], self._v[y0:y1]
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                z = 1.0 / ((g[2, 0] * us)[None, :] + (g[2, 1] * vs + g[2, 2])[:, None])
                s = ((g[0, 0] * us)[None, :] + (g[0, 1] * vs + g[0, 2])[:, None]) * z
                t = ((g[1, 0] * us)[None, :] + (g[1, 1] * vs + g[1, 2])[:, None]) * z
                zb = zbuf[y0:y1, x0:x1]
                mask = (z > NEAR) & (z < zb)
                mask &= (s >= -_EPS) & (s <= 1 + _EPS) & (t >= -_EPS) & (t <= 1 + _EPS)
            np.copyto(zb, z, where=mask)
            np.copyto(qid[y0:y1, x0:x1], np.int32(q), where=mask)
            np.copyto(s_map[y0:y1, x0:x1], s, where=mask)
            np.copyto(t_map[y0:y1, x0:x1], t, where=mask)
        hit = qid >= 0
        depth = np.where(hit, zbuf, np.float32(0.0))
        albedo = self._sample(qid, hit, depth, s_map, t_map, det_g)
        return Rendering(albedo, depth, qid)

    def _cull(
        self, K: np.ndarray, T_cw: np.ndarray
    ) -> tuple[list[int], list[tuple[int, int, int, int]], np.ndarray, np.ndarray]:
        """Quads that face the camera and overlap the image, their pixel boxes ``(x0, x1, y0,
        y1)``, ``G = H^-1`` (Q, 3, 3) and ``|det G|`` (Q,) (zero for culled quads)."""
        sc = self.scene
        R, tr = T_cw[:3, :3], T_cw[:3, 3]
        O, S, T = sc.origins @ R.T + tr, sc.edges_s @ R.T, sc.edges_t @ R.T
        corners = np.stack([O, O + S, O + S + T, O + T], axis=1)  # (Q, 4, 3) camera frame
        zc = corners[..., 2]
        facing = -(O * (sc.normals @ R.T)).sum(1) > 1e-9  # camera on the front side
        keep = np.flatnonzero(facing & (zc > NEAR).any(1))
        G = np.zeros((len(O), 3, 3))
        det_g = np.zeros(len(O))
        if len(keep) == 0:
            return [], [], G, det_g
        G[keep] = np.linalg.inv(K @ np.stack([S[keep], T[keep], O[keep]], axis=2))
        det_g[keep] = np.abs(np.linalg.det(G[keep]))
        with np.errstate(divide="ignore", invalid="ignore"):
            p = corners[keep] @ K.T
            xy = p[..., :2] / p[..., 2:3]
        straddle = (zc[keep] <= NEAR).any(1)
        xy[straddle] = 0.0  # boxes of these are computed after clipping
        lo = np.floor(xy.min(1)).astype(np.int64)
        hi = np.ceil(xy.max(1)).astype(np.int64) + 1
        for k in np.flatnonzero(straddle):  # part behind the near plane: clip, then project
            clipped = _clip_near(corners[keep[k]])
            if len(clipped) < 3:
                lo[k], hi[k] = 0, 0
                continue
            pc = clipped @ K.T
            pxy = pc[:, :2] / pc[:, 2:3]
            lo[k], hi[k] = np.floor(pxy.min(0)), np.ceil(pxy.max(0)) + 1
        lo = np.maximum(lo, 0)
        hi = np.minimum(hi, [self.width, self.height])
        ok = (hi > lo).all(1)
        boxes = [(x0, x1, y0, y1) for (x0, y0), (x1, y1) in zip(lo[ok].tolist(), hi[ok].tolist())]
        return keep[ok].tolist(), boxes, G, det_g

    def _sample(
        self,
        qid: np.ndarray,
        hit: np.ndarray,
        depth: np.ndarray,
        s_map: np.ndarray,
        t_map: np.ndarray,
        det_g: np.ndarray,
    ) -> np.ndarray:
        """Sample the atlas at every hit pixel with a per-pixel mip level."""
        atlas = self.atlas
        # Texels per pixel (area): |det G| z^3 * tex_w * tex_h; level = log2 of its square root.
        with np.errstate(divide="ignore"):
            base = 0.5 * np.log2(np.maximum(det_g * self._tex_area, 1e-30)) + 0.25
        base = np.append(base, 0.0).astype(np.float32)  # index -1 (no hit)
        top = np.append(atlas.levels - 1, 0).astype(np.float32)
        log_z = cv2.log(np.maximum(depth, np.float32(NEAR)))  # natural log, SIMD
        lvl = np.take(base, qid) + np.float32(1.5 / np.log(2)) * log_z
        np.clip(lvl, 0, np.take(top, qid), out=lvl)
        row = (lvl + 0.5).astype(np.int32)
        row += qid * atlas.num_levels
        row[~hit] = 0
        tiles = atlas.tiles
        map_x = np.take(tiles[:, 0], row) - np.float32(0.5)
        map_x += s_map * np.take(tiles[:, 2], row)
        map_y = np.take(tiles[:, 1], row) - np.float32(0.5)
        map_y += t_map * np.take(tiles[:, 3], row)
        map_x[~hit] = -100.0
        return cv2.remap(
            atlas.image,
            map_x,
            map_y,
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )

    def render(
        self, K: np.ndarray, T_cw: np.ndarray, domain: Domain, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Final image and depth of a view.

        Returns:
            image: RGB uint8 (H, W, 3); depth: float32 (H, W), camera z, 0 = nothing.
        """
        r = self.rasterize(K, T_cw)
        image = apply_domain(r.albedo, r.depth, r.quad_id, self.scene.shade(domain), domain, rng)
        return image, r.depth

    def render_many(
        self,
        K: np.ndarray,
        poses: Sequence[np.ndarray],
        domain: Domain,
        seeds: Sequence[Sequence[int]],
        workers: int = 2,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Render views concurrently (numpy and OpenCV release the GIL), yielded in order.

        Each view draws its noise from ``np.random.default_rng(seeds[k])``, so results do not
        depend on ``workers`` or on scheduling.
        """

        def one(k: int) -> tuple[np.ndarray, np.ndarray]:
            return self.render(K, poses[k], domain, np.random.default_rng(list(seeds[k])))

        if workers <= 1:
            yield from map(one, range(len(poses)))
            return
        with ThreadPoolExecutor(max_workers=workers) as pool:
            yield from pool.map(one, range(len(poses)))


def world_points(depth: np.ndarray, K: np.ndarray, T_cw: np.ndarray) -> np.ndarray:
    """World point of every pixel centre: float64 (H, W, 3), NaN where ``depth == 0``.

    Pixel ``(u, v)`` (integers = pixel centres) has ray ``K^-1 [u, v, 1]`` scaled by its depth.
    """
    h, w = depth.shape
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    rays = np.stack([u, v, np.ones_like(u)], axis=-1) @ np.linalg.inv(K).T
    X_cam = rays * depth[..., None].astype(np.float64)
    R, t = T_cw[:3, :3], T_cw[:3, 3]
    X = (X_cam - t) @ R  # R^T (X_cam - t)
    X[depth <= 0] = np.nan
    return X
