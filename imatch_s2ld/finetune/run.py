"""Self-supervised fine-tuning of S2LD on an unlabeled video: ``main(conf) -> report``.

Pipeline (every step importable; the CLI is :mod:`.cli`):

1. **Check the inputs before writing anything**: frames (:func:`.video.open_video`), intrinsics
   (:func:`.intrinsics.resolve_intrinsics`), the starting checkpoint, the evaluation pairs, and a
   *preflight* on a few evenly spaced windows with the starting matcher: a camera that does not move
   (median match displacement below ``static_px``) or a video none of whose probe windows can be
   reconstructed is refused with one line (:func:`preflight`). With prior intrinsics and
   ``refine_focal``, the focal length is chosen there by a profile search on the probe windows' BA.
2. **Before**: relative-pose AUC of the starting matcher on the evaluation pairs (if any), the
   BA reprojection error of the probe windows, and the label-free self-check (:mod:`.selfcheck`:
   relative-pose AUC on pairs of the video's windows against their SIFT BA poses).
3. **Fine-tune** with the generic accelerate :class:`~imatch_s2ld.train.trainer.Trainer` (resume,
   Ctrl-C, atomic checkpoints, TensorBoard) on :class:`.data.VideoWindows` with
   :class:`.model.FinetuneModel`; evaluation every ``eval.every`` steps.
4. **After** + report: ``report.json`` / ``report.md``, plots, before/after match pictures
   (:mod:`.report`); other matchers (``eval.baselines``, e.g. ``sift,aliked+lightglue``) evaluated on the
   same pairs with the same protocol appear beside before/after.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate.utils import broadcast_object_list
from torch.utils.data import Dataset

from ..ba.pipeline import reconstruct_window
from ..conf import merge_conf
from ..data.datasets import DatasetConfig, load_pairs
from ..data.sampling import SceneBalancedSampler
from ..errors import InputError
from ..models.s2ld import DEFAULT_CHECKPOINT, S2LD
from ..train.checkpoint import CHECKPOINT_DIR, LAST
from ..train.config import save_config
from ..train.trainer import TRAIN_DEFAULTS, Trainer, create_accelerator
from .data import GeometryWindows, VideoWindows, evenly_spaced
from .implicit import check_ba_grad
from .intrinsics import Intrinsics, resolve_intrinsics
from .model import DEFAULT_CONF as MODEL_CONF
from .model import FinetuneModel, window_statistics
from .selfcheck import PseudoPair, pseudo_pairs, self_check, track_check
from .video import open_video
from .window import window_pairs

__all__ = [
    "DEFAULT_CONF", "baseline_names", "build_windows", "check_baselines", "evaluate_baselines",
    "evaluate_pairs", "main", "preflight", "probe_ba", "select_windows",
]

logger = logging.getLogger(__name__)

DEFAULT_CONF: dict[str, Any] = {
    "video": None,  # folder of frames or a video file (required)
    "out": None,  # output folder (required)
    "stride": 1,
    "max_frames": None,
    "resize": None,  # None, longer side, or [W, H]
    "intrinsics": None,  # 3x3 text, COLMAP cameras.txt or JSON; else EXIF; else the prior
    "refine_focal": False,  # prior intrinsics only: choose the focal by BA cost on the probe windows
    "init": None,  # starting checkpoint (None: the shipped one)
    # spacing 4 (frames 0, 4, 8, 12: pairs 4-12 frames apart) measured better than 2 on the main job (README)
    "window": {"length": 4, "spacing": [4]},  # spacing: one or several (windows of several baselines)
    "model": MODEL_CONF,  # FinetuneModel options (geometry_from, reconstruction, loss, ...)
    "train": merge_conf(
        TRAIN_DEFAULTS,
        {
            "max_steps": 400,
            # docs/finetuning.md: with only the local-dense stage trainable, 3e-4 (the whole
            # network needed 3e-5: 1e-4 gained more in some runs and collapsed in others)
            "lr": 3e-4,
            "weight_decay": 0.0,
            "warmup_steps": 5,
            "scheduler": "constant",
            "grad_clip": 1.0,
            "log_every": 1,
            "save_every": 10,
            "find_unused_parameters": True,
        },
    ),
    "eval": {
        "pairs": None,  # pairs_with_gt.txt, or a COLMAP model folder
        "images": None,  # image folder (default: next to the pairs file / model)
        "max_pairs": None,
        "resize": "video",  # "video": the longer side of the training frames; None: full size
        "estimator": "ransac",
        "threshold": None,
        "every": 0,  # evaluate every N steps (0: before and after only)
        "viz": 4,  # before/after match pictures
        "baselines": [],  # other matchers evaluated on the same pairs (names of load_matcher), e.g. [sift]
    },
    "preflight": {"windows": 4, "static_px": 1.0},
    "probe_windows": 8,  # fixed windows whose BA error is measured before and after
    # label-free self-check: pairs of this many usable windows scored against their SIFT BA poses (0: off)
    "self_check_windows": 12,
}


# ---------------------------------------------------------------------------------------- inputs
def build_windows(conf: Mapping[str, Any]) -> tuple[VideoWindows, Intrinsics]:
    """Open the video and its intrinsics and cut it into windows (raises InputError on bad input)."""
    if conf["video"] is None:
        raise InputError("--video is required")
    video = open_video(conf["video"], int(conf["stride"]), conf["max_frames"], conf["resize"])
    intr = resolve_intrinsics(video, conf["intrinsics"])
    for i in range(len(video)):  # decode every frame now: a corrupt one fails before any output
        video.frame_rgb(i)
    spacings = window_spacings(conf["window"]["spacing"])
    windows = VideoWindows(video, intr.K, int(conf["window"]["length"]), spacings)
    return windows, intr


def window_spacings(value: Any) -> list[int]:
    """``window.spacing`` as a list: an int, a list of ints, or a comma-separated string (``"2,4"``)."""
    if isinstance(value, str):
        items = value.split(",")
    else:
        items = list(value) if isinstance(value, list | tuple) else [value]
    try:
        spacings = [int(str(v).strip()) for v in items]
    except ValueError:
        spacings = []
    if not spacings or min(spacings) < 1:
        raise InputError(f"--window-spacing: expected integers >= 1 (e.g. 2 or 2,4), got {value!r}")
    return spacings


def load_start(path: str | None) -> S2LD:
    """The starting S2LD (``--init``; default: the shipped checkpoint)."""
    ckpt = DEFAULT_CHECKPOINT if path is None else Path(path)
    where = "--init" if path is not None else "the shipped default checkpoint"
    if not ckpt.is_file():
        raise InputError(f"{ckpt}: checkpoint not found ({where})")
    return S2LD.from_checkpoint(ckpt)


def eval_dataset(econf: Mapping[str, Any]) -> DatasetConfig | None:
    """The evaluation pairs as a :class:`DatasetConfig` (``pairs`` file or ``colmap`` model folder)."""
    if econf["pairs"] is None:
        if econf["images"] is not None:
            raise InputError("--eval-images needs --eval-pairs")
        return None
    path = Path(econf["pairs"])
    if not path.exists():
        raise InputError(f"{path}: evaluation pairs not found (--eval-pairs)")
    kw = {"max_pairs": econf["max_pairs"]}
    if path.is_dir():
        return DatasetConfig(name="colmap", model=str(path), images=econf["images"], **kw)
    return DatasetConfig(name="pairs", pairs=str(path), images=econf["images"], **kw)


def baseline_names(value: Any) -> list[str]:
    """``eval.baselines`` as a list of matcher names: a list, or a comma-separated string (``"sift,orb"``)."""
    if value is None:
        return []
    if isinstance(value, str):
        items = value.split(",")
    else:
        items = list(value) if isinstance(value, list | tuple) else [value]
    if not all(isinstance(v, str) for v in items):
        raise InputError(f"--baselines: expected comma-separated matcher names, got {value!r}")
    return [v.strip() for v in items if v.strip()]


def check_baselines(names: list[str], dataset: DatasetConfig | None) -> None:
    """Refuse baselines without evaluation pairs, and unknown names or missing weights (before any output).

    Raises:
        InputError: one line naming the option or the matcher.
    """
    from ..matchers import check_matcher

    if names and dataset is None:
        raise InputError("--baselines needs --eval-pairs (baselines are evaluated on the evaluation pairs)")
    for name in names:
        check_matcher(name)


def evaluate_baselines(
    names: list[str], dataset: DatasetConfig, econf: Mapping[str, Any], out: Path, resize: Any
) -> dict[str, dict[str, Any]]:
    """Evaluate each matcher of ``names`` on the evaluation pairs with the before/after protocol, into
    ``out/<name>/`` (predictions cached there: a resumed run reuses them). Returns name -> summary."""
    from ..eval.cli import EvalConfig, evaluate
    from ..eval.export import ExportConfig
    from ..eval.score import ScoreConfig

    results = {}
    for name in names:
        logger.info("baseline %s on the evaluation pairs", name)
        conf = EvalConfig(
            out=str(out / name.replace(":", "_").replace("/", "_")),
            dataset=dataset,
            export=ExportConfig(matcher=name, resize=resize, progress=False),
            score=ScoreConfig(estimator=econf["estimator"], threshold_px=econf["threshold"]),
            viz=0,
        )
        results[name] = evaluate(conf)
    return results


def evaluate_pairs(
    net: S2LD, dataset: DatasetConfig, econf: Mapping[str, Any], out: Path, label: str, resize: Any, viz: int
) -> dict[str, Any]:
    """Relative-pose evaluation of ``net`` (:func:`imatch_s2ld.eval.evaluate`) into ``out``."""
    from ..eval.cli import EvalConfig, evaluate
    from ..eval.export import ExportConfig
    from ..eval.score import ScoreConfig

    net.name = label  # type: ignore[attr-defined]
    conf = EvalConfig(
        out=str(out),
        dataset=dataset,
        export=ExportConfig(matcher=label, resize=resize, overwrite=True, progress=False),
        score=ScoreConfig(estimator=econf["estimator"], threshold_px=econf["threshold"]),
        viz=int(viz),
    )
    return evaluate(conf, matcher=net)


# ------------------------------------------------------------------------------------- preflight
def _window_geometry(
    model: FinetuneModel, windows: VideoWindows, index: int, own_tracks: bool = False,
    predictions: bool = False,
) -> tuple[Any, torch.Tensor]:
    item = windows[index]
    images = item["images"]
    from .window import match_window, match_window_reference

    if predictions:
        return match_window_reference(model.net, images, float(model.conf["min_confidence"])), item["K"]
    pairs = window_pairs(images.shape[0], model.conf["max_gap"])
    s2ld = match_window(model.net, images, pairs, float(model.conf["min_confidence"]))
    return (s2ld if own_tracks else model.geometry_matches(images, pairs, s2ld)), item["K"]


def probe_ba(
    model: FinetuneModel,
    windows: VideoWindows,
    indices: list[int],
    K: np.ndarray | None = None,
    own_tracks: bool = True,
    predictions: bool = False,
) -> dict[str, Any]:
    """Reconstruct the windows ``indices`` with ``model``'s current matcher (no training): from S2LD's own
    tracks (``own_tracks``: the BA error measures the matcher, whatever ``--geometry-from`` is) or from
    the configured geometry source (the preflight). S2LD's own tracks link its detected keypoints
    (:func:`.window.match_window`: the detector's repeatability), or with ``predictions`` the
    reference frame's keypoints to their local-dense predictions in the other frames
    (:func:`.window.match_window_reference`: the precision of the matches S2LD outputs).

    Returns:
        ``{"windows": [...], "success": n, "ba_rms_px": mean final RMS over successes,
        "ba_rms_init_px": mean initial RMS, "num_points": mean landmarks, "reasons": [...]}``.
    """
    rows = []
    for index in indices:
        geometry, K_item = _window_geometry(model, windows, index, own_tracks, predictions)
        Kw = torch.as_tensor(K if K is not None else K_item.numpy(), dtype=torch.float64)
        rec = reconstruct_window(geometry.keypoints, geometry.pairs, Kw, model.conf["reconstruction"])
        stats = window_statistics(rec)
        rows.append(
            {
                "window": index,
                "success": bool(rec.success),
                "reason": rec.reason,
                **stats,
                "median_flow_px": _median_flow(geometry),
                "observations": _observation_residuals(rec, geometry, predictions),
            }
        )
    ok = [r for r in rows if r["success"]]

    def mean(key: str) -> float | None:
        return float(np.mean([r[key] for r in ok])) if ok else None

    return {
        "windows": rows,
        "success": len(ok),
        "ba_rms_px": mean("ba_rms_px"),
        "ba_rms_init_px": mean("ba_rms_init_px"),
        "num_points": mean("num_points"),
        "inlier_ratio": mean("inlier_ratio"),
    }


def _observation_residuals(rec: Any, geometry: Any, predictions: bool) -> list[list[float]]:
    """Each inlier observation of a successful reconstruction as ``[frame, anchor, x, y, residual_px]``:
    the anchor is the observed keypoint itself, or with ``predictions`` the reference-frame keypoint
    it was predicted from, at pixel ``(x, y)``; the same anchor in two matchers' probes is the same
    observation (:func:`.report.probe_common` compares those). Empty for a failed window."""
    if not rec.success or rec.ba is None:
        return []
    frame_kpt = np.asarray(rec.init.obs_keypoint)
    inlier = rec.ba.inliers.cpu().numpy()
    resid = rec.ba.residuals.detach().double().norm(dim=-1).cpu().numpy()
    ref = {p.j: p.matches[:, 0] for p in geometry.pairs} if predictions else {}
    xy = geometry.keypoints.xy
    rows = []
    for (f, k), r in zip(frame_kpt[inlier], resid[inlier]):
        f, k = int(f), int(k)
        frame, anchor = (0, int(ref[f][k])) if predictions and f != 0 else (f, k)
        x, y = xy[frame][anchor]
        rows.append([f, anchor, round(float(x), 3), round(float(y), 3), round(float(r), 5)])
    return rows


def _median_flow(geometry: Any) -> float:
    """Median displacement (pixels) of the matches of the window's most distant pair."""
    if not geometry.pairs:
        return float("nan")
    pm = max(geometry.pairs, key=lambda p: (p.j - p.i, len(p.matches)))
    if len(pm.matches) == 0:
        return float("nan")
    xy = geometry.keypoints.xy
    d = xy[pm.j][pm.matches[:, 1]] - xy[pm.i][pm.matches[:, 0]]
    return float(np.median(np.linalg.norm(d, axis=1)))


def preflight(
    model: FinetuneModel, windows: VideoWindows, intr: Intrinsics, conf: Mapping[str, Any]
) -> tuple[np.ndarray, dict[str, Any]]:
    """Refuse a static camera or an unreconstructable video; refine a prior focal length if asked.

    Returns:
        the intrinsics to train with and the probe report.
    Raises:
        InputError: static camera, or no probe window could be reconstructed (with the reasons).
    """
    pconf = conf["preflight"]
    indices = evenly_spaced(len(windows), int(pconf["windows"]))
    K = np.asarray(intr.K, dtype=np.float64)
    report = probe_ba(model, windows, indices, K, own_tracks=False)
    flows = [r["median_flow_px"] for r in report["windows"] if np.isfinite(r["median_flow_px"])]
    where = windows.video.path
    if flows and max(flows) < float(pconf["static_px"]):
        raise InputError(
            f"{where}: the camera does not move (median match displacement "
            f"{max(flows):.2f} px over a window); fine-tuning needs parallax: use a moving "
            "camera or a larger --window-spacing / --stride"
        )
    if report["success"] == 0:
        reasons = "; ".join(sorted({r["reason"] for r in report["windows"]}))[:300]
        raise InputError(
            f"{where}: none of {len(indices)} probe windows could be reconstructed ({reasons}); "
            "try --geometry-from sift, --intrinsics, or a larger --window-spacing"
        )
    if intr.source == "prior" and conf["refine_focal"]:
        K, report["focal_search"] = refine_focal(model, windows, indices, K)
    return K, report


_GOLDEN = 0.381966  # 1 - 1/phi: golden-section step, as a fraction of the larger side of the bracket


def _scaled_focal(K: np.ndarray, factor: float) -> np.ndarray:
    """``K`` with fx and fy multiplied by ``factor``."""
    Kf = np.array(K, dtype=np.float64)
    Kf[0, 0] *= factor
    Kf[1, 1] *= factor
    return Kf


def _parabola_vertex(a: float, x: float, b: float, fa: float, fx: float, fb: float) -> float | None:
    """Abscissa of the minimum of the parabola through three points ``a < x < b`` (None if degenerate)."""
    if not (a < x < b and np.isfinite([fa, fx, fb]).all()):
        return None
    p, q = (x - a) * (fx - fb), (x - b) * (fx - fa)
    den = p - q
    if den >= 0:  # not convex (the middle point is not below the chord)
        return None
    return x - 0.5 * ((x - a) * p - (x - b) * q) / den


def refine_focal(
    model: FinetuneModel,
    windows: VideoWindows,
    indices: list[int],
    K: np.ndarray,
    factors: tuple[float, ...] = (0.6, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5, 1.8),
    fine_steps: int = 4,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Profile search of the focal length (fx, fy = factor x the prior's) by the BA of the probe windows.

    The cost of a factor is the mean over the probe windows of the final robust BA cost per observation.
    The windows are matched once (their geometry does not depend on K); an evaluation is one BA per
    window. Windows that count: those that reconstruct at every coarse factor, or if none does, those that
    reconstruct with the prior (a factor at which one of them fails is then out).

    1. Coarse: every factor of ``factors``.
    2. Fine: golden-section search of log(factor) between the coarse neighbours of the best coarse factor
       (``fine_steps`` evaluations, each shrinking the bracket to ~0.6-0.8 of its width), then one
       evaluation at the vertex of the parabola through the best point and the two bracket ends. The
       lowest cost of all evaluations wins: a few percent of the profile optimum instead of up to
       +-11% for the coarse grid alone, for 5 more BAs per window (13 instead of 8).

    Returns:
        K with the chosen focal (``K`` unchanged if no window reconstructs) and the search
        ``{"prior_fx", "factor" (None: not refined), "fx", "windows", "evaluations": [{"stage": "coarse" |
        "fine", "factor", "fx", "cost"}, ...]}`` (cost None: a counted window failed at that factor).
    """
    geometries = {index: _window_geometry(model, windows, index)[0] for index in indices}  # K-independent
    prior_fx = float(K[0, 0])

    def window_costs(factor: float) -> dict[int, float]:
        costs = {}
        for index, geometry in geometries.items():
            Kf = torch.as_tensor(_scaled_focal(K, factor))
            rec = reconstruct_window(geometry.keypoints, geometry.pairs, Kf, model.conf["reconstruction"])
            if rec.success and rec.ba is not None and rec.init.problem is not None:
                costs[index] = rec.ba.cost_history[-1] / max(1, rec.init.problem.num_observations)
        return costs

    coarse = {f: window_costs(f) for f in factors}
    used = set(indices).intersection(*coarse.values())
    if not used:
        used = set(coarse[1.0] if 1.0 in coarse else window_costs(1.0))
    table: dict[float, float] = {}  # log(factor) -> cost
    evaluations: list[dict[str, Any]] = []

    def record(stage: str, t: float, costs: dict[int, float]) -> float:
        cost = float(np.mean([costs[i] for i in used])) if used and used <= costs.keys() else float("inf")
        table[t] = cost
        f = float(np.exp(t))
        evaluations.append(
            {
                "stage": stage,
                "factor": round(f, 4),
                "fx": round(prior_fx * f, 2),
                "cost": cost if np.isfinite(cost) else None,
            }
        )
        return cost

    for f in factors:
        record("coarse", float(np.log(f)), coarse[f])
    search: dict[str, Any] = {
        "prior_fx": prior_fx,
        "factor": None,
        "fx": prior_fx,
        "windows": sorted(used),
        "evaluations": evaluations,
    }
    if not np.isfinite(min(table.values())):
        logger.warning("focal refinement: no probe window reconstructs; keeping the prior focal")
        return K, search

    def cost(t: float) -> float:
        return record("fine", t, window_costs(float(np.exp(t))))

    grid = sorted(table)
    x = min(grid, key=table.__getitem__)
    k = grid.index(x)
    coarse_best = float(np.exp(x))
    a, b = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
    for _ in range(int(fine_steps)):
        u = x + _GOLDEN * (b - x) if b - x >= x - a else x - _GOLDEN * (x - a)
        if abs(u - x) < 1e-3:  # bracket narrower than 0.1 %
            break
        if cost(u) < table[x]:
            a, b, x = (x, b, u) if u > x else (a, x, u)
        else:
            a, b = (a, u) if u > x else (u, b)
    v = _parabola_vertex(a, x, b, table[a], table[x], table[b])
    if v is not None and min(abs(v - t) for t in table) > 1e-3:
        cost(v)
    best = min(table, key=table.__getitem__)
    factor = float(np.exp(best))
    Kb = _scaled_focal(K, factor)
    search.update(factor=round(factor, 4), fx=round(float(Kb[0, 0]), 2))
    logger.info(
        "focal refinement: factor %.3f of the prior (fx = %.1f px; best coarse factor %.2f; %d evaluations)",
        factor,
        Kb[0, 0],
        coarse_best,
        len(evaluations),
    )
    return Kb, search


def select_windows(
    model: FinetuneModel, windows: VideoWindows, probe: dict[str, Any], progress: bool = False
) -> Dataset:
    """The windows training draws from. When the geometry source does not depend on the matcher
    (``sift``, a learned source, their union), every window is reconstructed once here, the ones
    failing the quality gate are left out (so no step is spent on them) and the others'
    reconstructions travel with the windows (:class:`.data.GeometryWindows`). With the matcher's own
    geometry every window stays (failures are skipped during training).

    Under several processes each solves every ``world``-th window and the results are gathered.
    Writes ``probe["window_selection"] = {"windows", "usable", "rejected": {reason: count}}``.

    Raises:
        InputError: no window passes the gate (with the reasons).
    """
    if model.source.uses_matcher:
        return windows
    t0 = time.perf_counter()
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        # each process solves its share; every process then holds every usable reconstruction
        rank, world = dist.get_rank(), dist.get_world_size()
        mine = model.select_windows(windows, progress, range(rank, len(windows), world))
        shares: list[Any] = [None] * world
        dist.all_gather_object(shares, mine)
        usable, rejected, recs = [], {}, {}
        for keep, rej, share in shares:
            usable += keep
            recs.update(share)
            for k, n in rej.items():
                rejected[k] = rejected.get(k, 0) + n
        usable.sort()
    else:
        usable, rejected, recs = model.select_windows(windows, progress)
    probe["window_selection"] = {"windows": len(windows), "usable": len(usable), "rejected": rejected}
    logger.info("%s geometry: %d of %d windows usable (%.0f s)%s", model.source.name, len(usable),
                len(windows), time.perf_counter() - t0, "".join(f"; {n}x {k}" for k, n in rejected.items()))
    if not usable:
        reasons = "; ".join(f"{n}x {k}" for k, n in rejected.items())[:300]
        raise InputError(
            f"{windows.video.path}: no window of the video gives a usable {model.source.name} reconstruction "
            f"({reasons}); "
            "try a larger --window-spacing, more frames, --intrinsics, or model.min_points=N"
        )
    return GeometryWindows(windows, usable, recs)


# ------------------------------------------------------------------------------------------ main
def main(conf: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Fine-tune on ``conf["video"]`` and write ``conf["out"]`` (see the module docstring).

    Returns:
        The report (also ``OUT/report.json``) on the main process; ``{}`` on the others.
    Raises:
        InputError: bad input (one line naming the file or option); nothing is written then.
        imatch_s2ld.train.TrainingInterrupted: Ctrl-C/SIGTERM (a checkpoint was saved).
    """
    from .report import write_report

    conf = merge_conf(DEFAULT_CONF, conf)
    if conf["out"] is None:
        raise InputError("--out is required")
    check_ba_grad(conf["model"]["loss"])  # before decoding the video (FinetuneLoss checks it again)
    out = Path(conf["out"])
    tconf = dict(conf["train"])
    last = out / CHECKPOINT_DIR / LAST
    if tconf["resume"] and not last.is_file():
        raise InputError(f"{last}: no checkpoint to resume from (--resume)")
    if not tconf["resume"] and last.is_file() and not tconf["overwrite"]:
        raise InputError(
            f"{out}: already holds a fine-tuning run; pass --resume to continue it, "
            "--overwrite to start over, or another --out"
        )
    start_time = time.perf_counter()
    windows, intr = build_windows(conf)
    net = load_start(conf["init"])
    model = FinetuneModel(net, conf["model"])
    dataset = eval_dataset(conf["eval"])
    if dataset is not None:
        load_pairs(dataset)  # fail now on a bad pairs file
    baselines = baseline_names(conf["eval"]["baselines"])
    check_baselines(baselines, dataset)
    eval_resize = conf["eval"]["resize"]
    if eval_resize == "video":
        eval_resize = max(windows.video.image_size) if conf["resize"] is not None else None

    accelerator = create_accelerator(tconf, out)
    main_proc = accelerator.is_main_process
    try:
        logger.info(
            "[1/4] preflight: probing %d windows with the starting matcher", conf["preflight"]["windows"]
        )
        K, probe = preflight(model, windows, intr, conf)  # same result on every rank (deterministic)
        windows.K = torch.as_tensor(K, dtype=torch.float32)
        logger.info(
            "%s; %d windows of %d frames; preflight: %d/%d probe windows reconstructed",
            intr.description,
            len(windows),
            windows.length,
            probe["success"],
            len(probe["windows"]),
        )
        train_set = select_windows(model, windows, probe, bool(tconf["progress"]) and main_proc)
        if isinstance(train_set, GeometryWindows):
            check = pseudo_pairs(model, windows, train_set.indices, int(conf["self_check_windows"]),
                                 train_set.reconstructions)
        else:
            check = pseudo_pairs(model, windows, list(range(len(windows))), int(conf["self_check_windows"]))
        if main_proc:
            out.mkdir(parents=True, exist_ok=True)
            save_config(conf, out / "config.yaml")
        accelerator.wait_for_everyone()
        model.skip_log_dir = out

        probe_idx = evenly_spaced(len(windows), int(conf["probe_windows"]))
        logger.info(
            "[2/4] starting matcher: BA on %d probe windows%s",
            len(probe_idx),
            "" if dataset is None else " and evaluation pairs",
        )
        before = _before(
            model, windows, probe_idx, dataset, conf, out, eval_resize, main_proc, bool(tconf["resume"]),
            check,
        )
        baseline_results: dict[str, dict[str, Any]] = {}
        if main_proc and baselines and dataset is not None:
            logger.info("[2/4] baselines on the evaluation pairs: %s", ", ".join(baselines))
            baseline_results = evaluate_baselines(
                baselines, dataset, conf["eval"], out / "eval" / "baselines", eval_resize
            )
        validate = None
        if dataset is not None and int(conf["eval"]["every"]) > 0:

            def validate(m: FinetuneModel, step: int) -> dict[str, float]:
                s = evaluate_pairs(
                    m.net,
                    dataset,
                    conf["eval"],
                    out / "eval" / f"step_{step:06d}",
                    f"s2ld-finetuned@{step}",
                    eval_resize,
                    0,
                )
                return {k: float(s[k]) for k in ("auc@5", "auc@10", "auc@20", "precision")}

        sampler = SceneBalancedSampler(
            [len(train_set)],
            len(train_set),
            seed=int(tconf["seed"]),
            num_replicas=accelerator.num_processes,
            rank=accelerator.process_index,
        )
        logger.info(
            "[3/4] fine-tuning for %d steps (%d process(es), geometry from %s)",
            tconf["max_steps"],
            accelerator.num_processes,
            model.conf["geometry_from"],
        )
        result = Trainer(tconf, out, accelerator).fit(
            model,
            train_set,
            sampler,
            batch_size=1,
            num_workers=0,
            validate=validate,
            val_every=int(conf["eval"]["every"]),
            val_at_end=False,
            run_config=conf,
        )
        if not result.finished:
            return {}
        if main_proc:
            logger.info(
                "[4/4] fine-tuned matcher: BA on the probe windows%s, report",
                "" if dataset is None else ", evaluation pairs",
            )
            model.net.eval()
            after = _measure(
                model, windows, probe_idx, dataset, conf, out, eval_resize, "after", "s2ld-finetuned", check
            )
            report = write_report(
                out, conf, intr, K, probe, before, after, result, time.perf_counter() - start_time,
                baselines=baseline_results,
            )
        accelerator.wait_for_everyone()
        return report if main_proc else {}
    finally:
        accelerator.end_training()


def _before(
    model: FinetuneModel,
    windows: VideoWindows,
    probe_idx: list[int],
    dataset: DatasetConfig | None,
    conf: Mapping[str, Any],
    out: Path,
    eval_resize: Any,
    main_proc: bool,
    resume: bool,
    check: list[PseudoPair],
) -> dict[str, Any]:
    """Probe-window BA and evaluation of the starting matcher (cached in ``OUT/before.json``)."""
    import json

    from ..eval.report import write_json

    path = out / "before.json"
    before: dict[str, Any] = {}
    if main_proc:
        if resume and path.is_file():
            before = json.loads(path.read_text())
        else:
            before = _measure(
                model, windows, probe_idx, dataset, conf, out, eval_resize, "before", "s2ld-start", check
            )
            write_json(path, before)
    box = [before]
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        broadcast_object_list(box)
    return box[0]


def _draw_video(
    model: FinetuneModel,
    windows: VideoWindows,
    probe_idx: list[int],
    conf: Mapping[str, Any],
    folder: Path,
    label: str,
    dataset: DatasetConfig | None,
) -> None:
    """Without evaluation pairs, the before/after pictures are matches on probe windows of the video."""
    from .report import draw_video_pairs

    viz = int(conf["eval"]["viz"])
    if dataset is None and viz > 0:
        picks = [
            probe_idx[i] for i in np.linspace(0, len(probe_idx) - 1, min(viz, len(probe_idx))).astype(int)
        ]
        draw_video_pairs(model.net, windows, sorted(set(picks)), windows.K.double().numpy(), folder, label)


def _measure(
    model: FinetuneModel,
    windows: VideoWindows,
    probe_idx: list[int],
    dataset: DatasetConfig | None,
    conf: Mapping[str, Any],
    out: Path,
    eval_resize: Any,
    stage: str,
    label: str,
    check: list[PseudoPair],
) -> dict[str, Any]:
    """BA on the probe windows, the self-check on ``check``, pictures, and the evaluation (if any) of
    the current matcher."""
    result: dict[str, Any] = {"probe": probe_ba(model, windows, probe_idx),
                              "probe_predictions": probe_ba(model, windows, probe_idx, predictions=True),
                              "self_check": self_check(model.net, windows, check),
                              "track_check": track_check(model.net, windows, check)}
    _draw_video(model, windows, probe_idx, conf, out / "video" / stage / "viz", label, dataset)
    if dataset is not None:
        result["eval"] = evaluate_pairs(
            model.net,
            dataset,
            conf["eval"],
            out / "eval" / stage,
            label,
            eval_resize,
            int(conf["eval"]["viz"]),
        )
    return result
