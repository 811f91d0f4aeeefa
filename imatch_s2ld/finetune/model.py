"""One fine-tuning step on a window, packaged for the generic trainer (:mod:`imatch_s2ld.train.trainer`).

:class:`FinetuneModel` wraps the S2LD being fine-tuned and follows the trainer's model contract
(``batch_inputs`` / ``forward`` / ``loss`` / ``save_checkpoint``). Its ``forward`` on a window:

1. matches the window's pairs with the current S2LD, no gradient (:func:`.window.match_window`), when
   a term needs S2LD's own tracks (:attr:`FinetuneModel.needs_tracks`; not with the defaults: SIFT
   geometry and the triangulation term alone need only the BA poses);
2. takes the window's geometry from its source (:mod:`.geometry`: those matches, SIFT or learned
   tracks, or a union) and reconstructs it (tracks, initialisation, PyPose-style Schur BA:
   :func:`imatch_s2ld.ba.reconstruct_window`);
3. computes :class:`.loss.FinetuneLoss` (S2LD re-run **with** gradient against the fixed BA solution).

**Skipped windows.** When the reconstruction fails (or the BA is degenerate), the step's loss is
``0 * sum(parameters)``: every parameter gets a zero gradient, so under DDP every process still joins
the gradient all-reduce of the step (a process that returned no graph would hang the others). The
skip is reported in the ``skipped`` term (1) with the reason logged; the other statistics are NaN
(the trainer averages finite values only).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..ba.pipeline import DEFAULT_CONF as RECONSTRUCTION_CONF
from ..ba.pipeline import WindowReconstruction, reconstruct_window
from ..ba.tracks import PairMatches
from ..conf import merge_conf
from ..data.images import to_grayscale
from ..errors import InputError
from ..models.s2ld import S2LD
from ..models.s2ld_loss import LossOutput
from .data import uint8_frames
from .geometry import geometry_source, learned_window_matches, merge_window_matches, sift_window_matches
from .implicit import ImplicitBAError
from .loss import DEFAULT_CONF as LOSS_CONF
from .loss import TERM_KEYS, FinetuneLoss
from .targets import WindowTargets
from .window import WindowMatches, match_window, window_matches, window_pairs

__all__ = [
    "DEFAULT_CONF", "FinetuneModel", "STAT_KEYS", "reason_counts", "reason_kind", "skip_reasons",
    "window_statistics",
]

logger = logging.getLogger(__name__)

DEFAULT_CONF: dict[str, Any] = {
    "geometry_from": "sift",  # a geometry.GEOMETRY_SOURCES name or a union A,B (docs/finetuning.md)
    "max_gap": None,  # match window frames at most this many apart (None: all pairs)
    "min_confidence": 0.0,  # S2LD matches below this confidence do not enter tracks
    # quality gate: a weak reconstruction gives targets worse than the matcher's own predictions
    "min_points": 80,  # skip windows whose BA has fewer landmarks
    "min_registered": None,  # skip windows with fewer registered frames (None: all frames of the window)
    # contrast 0.02 (OpenCV: 0.04): on the foggy target video 5x more keypoints, 12 instead of 5 of 13
    # windows pass the gate, and the BA poses' epipolar error of true correspondences halves
    # (docs/finetuning.md)
    "sift": {"num_features": 2000, "ratio": 0.8, "contrast_threshold": 0.02},
    # the aliked+lightglue / disk+lightglue sources (more options: imatch_s2ld.matchers.lightglue.DEFAULTS)
    "lightglue": {"max_keypoints": 2048, "filter_threshold": 0.1},
    "reconstruction": RECONSTRUCTION_CONF,  # imatch_s2ld.ba.reconstruct_window config
    "loss": LOSS_CONF,
    # S2LD parameters fine-tuning updates (module name prefixes or S2LD.parameter_groups() names such as
    # "backbone:fine"; "all": every one), all others stay fixed. Default: the local-dense stage and the
    # backbone's layers that make the 1/2 feature map it reads; training the whole network drifted the
    # coarse matching (docs/finetuning.md)
    "trainable": ["fine", "backbone:fine"],
    "freeze": [],  # of those, prefixes held fixed as well (e.g. "fine.levels.0")
}

#: Statistics logged per step besides the loss terms (NaN on skipped windows).
STAT_KEYS = (
    "skipped",
    "ba_rms_init_px",
    "ba_rms_px",
    "ba_cost_init",
    "ba_cost",
    "num_tracks",
    "num_points",
    "inlier_ratio",
    "registered_frames",
    "s2ld_matches",
    "tracked_s2ld_matches",
    "time_match_s",
    "time_ba_s",
)


def _rank() -> int:
    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def window_statistics(rec: WindowReconstruction) -> dict[str, float]:
    """BA cost/RMS before and after, tracks, landmarks, inlier ratio, registered frames of a window."""
    stats = {"num_tracks": float(rec.tracks.num_tracks)}
    problem, ba = rec.init.problem, rec.ba
    if problem is None or ba is None:
        return stats
    r0 = problem.residuals().detach()
    ok = torch.isfinite(r0).all(-1)
    rms0 = float(r0[ok].square().sum(-1).mean().sqrt()) if bool(ok.any()) else float("nan")
    stats.update(
        ba_rms_init_px=rms0,
        ba_rms_px=float(ba.rms_px),
        ba_cost_init=float(ba.cost_history[0]),
        ba_cost=float(ba.cost_history[-1]),
        num_points=float(problem.num_points),
        inlier_ratio=float(ba.inliers.float().mean()),
        registered_frames=float(len(rec.init.frames)),
    )
    return stats


def _no_matches(num_frames: int, pairs: list[tuple[int, int]]) -> WindowMatches:
    """The window's pairs with no keypoints and no matches."""
    return window_matches(num_frames, {}, [PairMatches.create(a, b, np.zeros((0, 2), np.int64))
                                           for a, b in pairs])


def _under(name: str, prefix: str) -> bool:
    """Whether parameter ``name`` is ``prefix`` or lies under the module ``prefix``."""
    return name == prefix or name.startswith(prefix + ".")


def reason_kind(reason: str) -> str:
    """A skip reason as a category: its text before any parenthesis, numbers as N
    (``weak: 26 landmarks (need 80)`` -> ``weak: N landmarks``)."""
    return re.sub(r"\d+(\.\d+)?", "N", reason.split("(")[0].strip().rstrip(":"))


def reason_counts(reasons: Iterable[str]) -> dict[str, int]:
    """How many of ``reasons`` fall in each kind (:func:`reason_kind`), most frequent first."""
    counts = Counter(reason_kind(r) for r in reasons)
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def skip_reasons(folder: Path) -> dict[str, int]:
    """Windows skipped during training per kind of reason (:func:`reason_counts`), every rank's
    ``skipped_windows_rank*.jsonl`` in ``folder`` (:attr:`FinetuneModel.skip_log_dir`)."""
    logs = sorted(Path(folder).glob("skipped_windows_rank*.jsonl"))
    return reason_counts(json.loads(line)["reason"] for path in logs
                         for line in path.read_text().splitlines() if line.strip())


class FinetuneModel(nn.Module):
    """The S2LD being fine-tuned (``net``) plus the window step (see the module docstring).

    Args:
        net: the S2LD network (its weights are what training changes).
        conf: overrides of :data:`DEFAULT_CONF` (strict).
    """

    def __init__(self, net: S2LD, conf: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.net = net
        self.conf = merge_conf(DEFAULT_CONF, conf)
        self.source = geometry_source(self.conf["geometry_from"])
        for part in self.source.parts:  # a learned source's weights are there (one line if not)
            if part.endswith("+lightglue"):
                from ..matchers.lightglue import check_options, check_weights

                check_weights(part.split("+")[0])
                check_options(part.split("+")[0], {"cache_images": 0, **self.conf["lightglue"]})
        self._learned: dict[str, Any] = {}  # LightGlueMatcher per learned source, built on first use
        self.criterion = FinetuneLoss(self.conf["loss"])
        self._select_trainable(self.conf["trainable"], [str(f) for f in self.conf["freeze"]])
        self._check_trainable()
        self.last_reason = ""
        #: folder for ``skipped_windows_rank{r}.jsonl`` (one line per skipped window) and
        #: ``failed_ba/window_<start>.npz`` (problems whose BA failed); None: not written
        self.skip_log_dir: Path | None = None


    # ---------------------------------------------------------------- trainer contract
    @staticmethod
    def batch_inputs(batch: Mapping[str, Any]) -> dict[str, Any]:
        """A collated window batch (batch size 1) -> ``forward`` keyword arguments (``geometry``: the
        window's reconstruction when the data carries it, :class:`.data.GeometryWindows`)."""
        images, K = batch["images"], batch["K"]
        if images.dim() != 5 or images.shape[0] != 1:
            raise ValueError(
                f"fine-tuning takes one window per batch: images (1, N, C, H, W), got {tuple(images.shape)}"
            )
        geometry = batch["geometry"][0] if "geometry" in batch else None
        return {"images": images[0], "K": K[0], "start": int(batch["start"][0]), "geometry": geometry}

    def forward(self, images: Tensor, K: Tensor, start: int = 0,
                geometry: WindowReconstruction | None = None) -> dict[str, Tensor]:
        """One window step.

        Args:
            images: ``(N, 3, H, W)`` RGB (or ``(N, 1, H, W)`` gray) frames in [0, 1] (H, W multiples of
                8); K: ``(3, 3)`` intrinsics.
            start: index of the window (for log messages).
            geometry: the window's reconstruction from a source independent of the matcher, solved
                before training (:meth:`select_windows`); None: solved here.
        Returns:
            ``{"total": 0-d loss, <term>: 0-d detached}`` with the :class:`FinetuneLoss` terms and
            :data:`STAT_KEYS`.
        """
        t0 = time.perf_counter()
        pairs = window_pairs(images.shape[0], self.conf["max_gap"])
        if self.needs_tracks:
            s2ld = match_window(self.net, images, pairs, float(self.conf["min_confidence"]))
        else:  # the terms need only the BA poses and the gradient pass's own matches
            s2ld = _no_matches(images.shape[0], pairs)
        t1 = time.perf_counter()
        if not self.source.uses_matcher:  # solved once before training (select_windows)
            rec = geometry if geometry is not None else self.independent_reconstruction(images, K)
        else:
            matches = self.geometry_matches(images, pairs, s2ld)
            rec = reconstruct_window(
                matches.keypoints, matches.pairs, K.detach().double().cpu(), self.conf["reconstruction"]
            )
        t2 = time.perf_counter()
        stats = window_statistics(rec)
        stats.update(
            time_match_s=t1 - t0,
            time_ba_s=t2 - t1,
            s2ld_matches=float(sum(len(p.matches) for p in s2ld.pairs)),
        )
        success, reason = self._step_gate(rec, images.shape[0])
        self.last_reason = reason
        if not success:
            self._log_skip(start, reason)
            if self.skip_log_dir is not None and reason.startswith("ba:") and rec.init.problem is not None:
                # for `imatch ba PROBLEM.npz`
                rec.init.problem.save(self.skip_log_dir / "failed_ba" / f"window_{start:05d}.npz")
            return self._skipped(images, stats)
        if not self.source.uses_matcher:  # S2LD tracks (if any) triangulated with the BA poses
            targets = WindowTargets.from_poses(rec, s2ld, K)
        else:
            targets = WindowTargets.from_reconstruction(rec, matches, s2ld.keypoints.counts)
        try:
            loss = self.criterion(self.net, images, K, s2ld, targets)
        except ImplicitBAError as err:  # --ba-grad implicit: the re-solve failed on this window
            self.last_reason = str(err)
            self._log_skip(start, str(err))
            return self._skipped(images, stats)
        out = {"total": loss.total, **loss.terms}
        out.update(
            {k: loss.total.new_tensor(stats.get(k, float("nan"))) for k in STAT_KEYS if k != "skipped"}
        )
        out["tracked_s2ld_matches"] = loss.terms["num_targets"]
        if not self.needs_tracks:
            out["s2ld_matches"] = loss.terms["num_matches"]
        out["skipped"] = loss.total.new_zeros(())
        return out

    def loss(self, pred: Mapping[str, Tensor], batch: Mapping[str, Any]) -> LossOutput:
        """The trainer's loss hook: ``forward`` already computed it."""
        return LossOutput(pred["total"], {k: v.detach() for k, v in pred.items() if k != "total"})

    def save_checkpoint(self, path: str | os.PathLike[str], extra: dict[str, Any] | None = None) -> Path:
        """Write the fine-tuned S2LD (a plain S2LD checkpoint, loadable with ``--matcher s2ld:PATH``)."""
        return self.net.save_checkpoint(path, extra=extra)

    def independent_reconstruction(self, images: Tensor, K: Tensor,
                                   source: str | None = None) -> WindowReconstruction:
        """The window's reconstruction from a source independent of the matcher: ``source`` (a
        ``--geometry-from`` name without ``matcher``) or this model's.

        Args:
            images: ``(N, 3, H, W)`` or ``(N, 1, H, W)`` frames in [0, 1]; K: ``(3, 3)``.
        """
        src = self.source if source is None else geometry_source(source)
        if src.uses_matcher:
            raise ValueError(f"geometry source {src.name!r} depends on the matcher")
        pairs = window_pairs(images.shape[0], self.conf["max_gap"])
        matches = self._independent(src.parts, images, pairs)
        return reconstruct_window(
            matches.keypoints, matches.pairs, K.detach().double().cpu(), self.conf["reconstruction"]
        )

    def select_windows(self, windows: Any, progress: bool = False, indices: Sequence[int] | None = None
                       ) -> tuple[list[int], dict[str, int], dict[int, WindowReconstruction]]:
        """A source independent of the matcher: reconstruct every window of ``windows`` (items as
        :class:`.data.VideoWindows`; only ``indices`` when given) once and keep those passing the
        quality gate (training then never draws a window it would skip).

        Returns:
            the usable window indices, ``{reason: count}`` of the rejected ones, and the usable
            windows' reconstructions by window index (for :class:`.data.GeometryWindows`).
        """
        if self.source.uses_matcher:
            raise ValueError(f"select_windows: geometry source {self.source.name!r} depends on the matcher")
        keep, failures, recs = [], [], {}
        indices = range(len(windows)) if indices is None else indices
        if progress:
            from tqdm import tqdm

            indices = tqdm(indices, desc=f"{self.source.name} geometry of the windows", leave=False)
        for index in indices:
            item = windows[index]
            rec = self.independent_reconstruction(item["images"], item["K"])
            ok, reason = (rec.success, rec.reason)
            if ok:
                ok, reason = self._quality(rec, item["images"].shape[0])
            if ok:
                keep.append(index)
                recs[int(index)] = rec
            else:
                failures.append(reason)
        return keep, reason_counts(failures), recs

    @property
    def needs_tracks(self) -> bool:
        """Whether a step needs S2LD's tracks from a no-gradient matching pass: always with
        a source that uses the matcher; otherwise for the matching term and the reprojection term on
        predictions (``reprojection_points: prediction`` or ``ba_grad: implicit``). The triangulation
        term needs the BA poses alone, the keypoint reprojection term builds its tracks from the
        gradient pass's own matches."""
        return self.source.uses_matcher or self.criterion.needs_tracks

    # ---------------------------------------------------------------- helpers
    def _select_trainable(self, trainable: str | list[str], freeze: list[str]) -> None:
        if isinstance(trainable, str) and trainable != "all":
            raise InputError(f"model.trainable: expected a list of module names or 'all', got {trainable!r}")
        names = [n for n, _ in self.net.named_parameters()]
        groups = self.net.parameter_groups()

        def expand(prefixes: list[str]) -> list[str]:
            return [p for t in prefixes for p in groups.get(t, [t])]

        unknown = [t for t in ([] if trainable == "all" else list(trainable)) + freeze
                   if ":" in str(t) and str(t) not in groups]
        if unknown:
            raise InputError(f"model.trainable / model.freeze: unknown parameter group(s) {unknown} "
                             f"(groups: {', '.join(g for g in groups if ':' in g)})")
        freeze = expand(freeze)
        train = names if trainable == "all" else expand([str(t) for t in trainable])
        for key, prefixes in (("trainable", [] if trainable == "all" else train), ("freeze", freeze)):
            for prefix in prefixes:
                if not any(_under(n, prefix) for n in names):
                    modules = sorted({n.split(".")[0] for n in names})
                    raise InputError(f"model.{key}: no S2LD parameters under {prefix!r} "
                                     f"(modules: {', '.join(modules)})")
        for name, param in self.net.named_parameters():
            held = any(_under(name, p) for p in freeze)
            param.requires_grad_(any(_under(name, p) for p in train) and not held)

    def _check_trainable(self) -> None:
        """Refuse a configuration whose loss cannot move any unfrozen weight (one line each)."""
        trainable = [n for n, p in self.net.named_parameters() if p.requires_grad]
        if not trainable:
            raise InputError("model.trainable / model.freeze: no S2LD parameter left to fine-tune")
        loss = self.criterion.conf
        keypoint_layers = self.net.parameter_groups()["keypoints"]
        if (float(loss["reprojection_weight"]) > 0 and loss["reprojection_points"] == "keypoints"
                and loss["ba_grad"] == "fixed"
                and not any(_under(n, p) for n in trainable for p in keypoint_layers)):
            raise InputError(
                "model.loss.reprojection_weight > 0 with reprojection_points=keypoints trains the keypoints "
                f"({', '.join(keypoint_layers)}), which are not trainable: add keypoints to model.trainable "
                "or set the weight to 0")

    def geometry_matches(self, images: Tensor, pairs: list[tuple[int, int]],
                         s2ld: WindowMatches) -> WindowMatches:
        """The window's keypoints and matches from the geometry source (with ``matcher``: ``s2ld``'s
        keypoints first, the other source's after them)."""
        if not self.source.uses_matcher:
            return self._independent(self.source.parts, images, pairs)
        rest = self.source.parts[1:]
        return merge_window_matches(s2ld, self._independent(rest, images, pairs)) if rest else s2ld

    def part_matches(self, part: str, images: Tensor, pairs: list[tuple[int, int]]) -> WindowMatches:
        """One basic source's keypoints and matches of the window (``matcher``: S2LD's, no gradient)."""
        if part == "matcher":
            return match_window(self.net, images, pairs, float(self.conf["min_confidence"]))
        return self._independent((part,), images, pairs)

    def _independent(self, parts: Sequence[str], images: Tensor,
                     pairs: list[tuple[int, int]]) -> WindowMatches:
        """The union of basic sources other than ``matcher``, in order."""
        frames, out = uint8_frames(images), None
        for part in parts:
            if part == "sift":
                sconf = self.conf["sift"]
                m = sift_window_matches([to_grayscale(f) for f in frames], pairs, int(sconf["num_features"]),
                                        float(sconf["ratio"]), float(sconf["contrast_threshold"]))
            else:
                matcher = self._learned.get(part)
                if matcher is None:
                    from ..matchers.lightglue import LightGlueMatcher

                    options = {"cache_images": 0, **self.conf["lightglue"]}
                    matcher = LightGlueMatcher(part.split("+")[0], **options)
                    self._learned[part] = matcher
                m = learned_window_matches(matcher.extract, matcher.match_features, frames, pairs)
            out = m if out is None else merge_window_matches(out, m)
        assert out is not None
        return out

    def _step_gate(self, rec: WindowReconstruction, num_frames: int) -> tuple[bool, str]:
        """Whether a training step uses the window: (success, reason). The reconstruction must have
        succeeded and pass the quality gate."""
        if not rec.success:
            return False, rec.reason
        return self._quality(rec, num_frames)

    def _quality(self, rec: WindowReconstruction, num_frames: int) -> tuple[bool, str]:
        need = num_frames if self.conf["min_registered"] is None else int(self.conf["min_registered"])
        points = rec.init.problem.num_points if rec.init.problem is not None else 0
        if len(rec.init.frames) < need:
            return False, f"weak: {len(rec.init.frames)} of {num_frames} frames registered (need {need})"
        if points < int(self.conf["min_points"]):
            return False, f"weak: {points} landmarks (need {self.conf['min_points']})"
        return True, rec.reason

    def _log_skip(self, start: int, reason: str) -> None:
        logger.info("window at frame %d skipped: %s", start, reason)
        if self.skip_log_dir is not None:
            with open(self.skip_log_dir / f"skipped_windows_rank{_rank()}.jsonl", "a") as f:
                f.write(json.dumps({"start": start, "reason": reason}) + "\n")

    def _skipped(self, images: Tensor, stats: Mapping[str, float]) -> dict[str, Tensor]:
        zero = sum(p.sum() for p in self.net.parameters() if p.requires_grad) * 0.0
        nan = images.new_full((), float("nan"))
        out: dict[str, Tensor] = {"total": zero}
        for key in TERM_KEYS:
            out[key] = nan
        out.update({k: images.new_tensor(stats[k]) if k in stats else nan for k in STAT_KEYS})
        out["skipped"] = images.new_ones(())
        return out
