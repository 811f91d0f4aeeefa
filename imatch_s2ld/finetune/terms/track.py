"""Track term: the multi-view form of the triangulation term. A keypoint of frame ``a`` whose predicted
matches (those the gate keeps) reach two or more later frames is a track of the matcher's output; it is
triangulated from all its observations with the BA poses (:meth:`TriangulationRegularizer.tracks`) and
penalised for its reprojection error, which two views alone cannot see along the epipolar line. Uses the
triangulation term's options (``triangulation_grad``, ``triangulation_levels``, ``triangulation``)."""

from __future__ import annotations

import torch
from torch import Tensor

from ...losses.triangulation import TriangulationRegularizer
from .base import LossTerm, Pair, Window
from .triangulation import supervised_levels

__all__ = ["TrackTerm"]

#: a pair's predictions for the track term: keypoint indices of frame a, per-level predictions, confidences
Observed = tuple[Tensor, list[Tensor], Tensor]


class TrackTerm(LossTerm):
    name = "track"
    metrics = ("num_output_tracks",)
    default_conf = {"track_weight": 0.0}

    def check(self) -> None:
        super().check()
        self.regularizer = TriangulationRegularizer(self.conf["triangulation"])

    def start(self, window: Window) -> None:
        self._obs: dict[int, tuple[Tensor, dict[int, Observed]]] = {}

    def add_pair(self, window: Window, pair: Pair) -> None:
        if bool(pair.predicted.any()):
            self._obs.setdefault(pair.a, (pair.out.kpts0[0], {}))[1][pair.b] = self._observed(pair)

    def _observed(self, pair: Pair) -> Observed:
        """Keypoint indices of frame a ``(M,)`` (each once), their predictions in frame b at the supervised
        levels (``[(M, 2)]``), confidences ``(M,)``."""
        out = pair.out
        idx = torch.nonzero(pair.predicted).flatten()
        i = out.matches_i[idx]
        first = torch.ones_like(i, dtype=torch.bool)
        if len(i) > 1:  # keep the first match of a keypoint (mutual matching gives one anyway)
            order = torch.argsort(i, stable=True)
            dup = torch.zeros_like(first)
            dup[order[1:]] = i[order[1:]] == i[order[:-1]]
            first = ~dup
        idx, i = idx[first], i[first]
        return i, [lv.expectation[idx] for lv in supervised_levels(self.conf, out)], out.mconf[idx].detach()

    def finish(self, window: Window) -> tuple[Tensor, dict[str, Tensor]]:
        """Mean over frames ``a`` of the multi-view regularizer of ``a``'s keypoints seen in >= 2 other
        frames, averaged over the supervised levels."""
        T, K = window.targets.T_cw, window.K
        terms, n_tracks = [], 0
        for a, (kpts, partners) in sorted(self._obs.items()):
            if len(partners) < 2:
                continue
            n_kp = kpts.shape[0]
            frames = [a, *sorted(partners)]
            vis = torch.zeros(len(frames), n_kp, dtype=torch.bool, device=kpts.device)
            vis[0] = True
            conf_sum = kpts.new_zeros(n_kp)
            for v, b in enumerate(frames[1:], 1):
                i, _, c = partners[b]
                vis[v, i] = True
                conf_sum = conf_sum.index_add(0, i, c.to(conf_sum.dtype))
            n_vis = vis.sum(0)
            keep = n_vis >= 3
            if not bool(keep.any()):
                continue
            weight = (conf_sum / (n_vis - 1).clamp_min(1))[keep]
            fr = torch.as_tensor(frames, device=T.device)
            per_level = []
            for level in range(len(partners[frames[1]][1])):
                views = [kpts.detach() if self.conf["triangulation_grad"] == "prediction" else kpts]
                for b in frames[1:]:
                    i, lv, _ = partners[b]
                    views.append(kpts.new_zeros(n_kp, 2).index_put((i,), lv[level]))
                xy = torch.stack(views)[:, keep]
                per_level.append(self.regularizer.tracks(xy, vis[:, keep], K[fr], T[fr], weight,
                                                         window.image_size).loss)
            terms.append(torch.stack(per_level).mean())
            n_tracks += int(keep.sum())
        loss = torch.stack(terms).mean() if terms else window.images.new_zeros(())
        return loss, {"num_output_tracks": window.images.new_tensor(float(n_tracks))}
