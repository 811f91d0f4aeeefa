"""Self-supervised fine-tuning of S2LD on an unlabeled video: ``main(conf) -> FinetuneResult``.

Named steps, each importable and returning a typed result (:mod:`.results`); the CLI is :mod:`.cli`:

1. **Inputs** (:func:`.inputs.check_inputs` -> :class:`~.results.Inputs`): frames, intrinsics, the
   starting checkpoint, the evaluation pairs and baselines, checked before anything is written.
2. **Preflight and focal search** (:func:`.probe.preflight` -> :class:`~.results.Preflight`): a few
   evenly spaced windows reconstructed with the geometry source; a camera that does not move or a video
   none of whose probe windows reconstructs is refused with one line (the reasons per source). With
   prior intrinsics and ``refine_focal`` the focal length is chosen by a profile search of their BA.
3. **Window selection** (:func:`select_windows` -> :class:`~.results.WindowSelection`): with a source
   independent of the matcher every window is reconstructed once; windows failing the quality gate
   are left out and the others' geometry travels with them (:class:`.data.GeometryWindows`).
4. **Before** (:func:`.evaluation.measure_before` -> :class:`~.results.Measurement`): BA of the probe
   windows with the starting matcher, the label-free self-check and track check against a reference
   source, and the relative-pose AUC on the evaluation pairs; baselines on the same pairs.
5. **Training** (:func:`train` -> :class:`~.results.Training`): the generic accelerate
   :class:`~imatch_s2ld.train.trainer.Trainer` (resume, Ctrl-C, atomic checkpoints, TensorBoard) with
   :class:`.model.FinetuneModel`; every ``eval.every`` steps the label-free self-check
   (and the evaluation pairs), the best by the self-check kept as ``best.pt``.
6. **After** (:func:`.evaluation.measure`) and the **report** (:func:`.report.write_report`:
   ``report.json`` / ``report.md``, plots, before/after pictures).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import torch

from ..conf import merge_conf
from ..data.sampling import SceneBalancedSampler
from ..errors import InputError
from ..train.config import save_config
from ..train.trainer import TRAIN_DEFAULTS, Trainer, create_accelerator
from .data import GeometryWindows, VideoWindows, evenly_spaced
from .evaluation import evaluate_baselines, evaluate_pairs, measure, measure_before
from .inputs import check_inputs
from .model import DEFAULT_CONF as MODEL_CONF
from .model import FinetuneModel, skip_reasons
from .probe import preflight
from .report import best_metric
from .results import FinetuneResult, Inputs, Training, WindowSelection
from .selfcheck import PseudoPair, pseudo_pairs, self_check

__all__ = ["DEFAULT_CONF", "main", "select_windows", "train"]

logger = logging.getLogger(__name__)

DEFAULT_CONF: dict[str, Any] = {
    "video": None,  # folder of frames or a video file, or a list of them (one camera) (required)
    "out": None,  # output folder (required)
    "stride": 1,
    "max_frames": None,
    "resize": None,  # None, longer side, or [W, H]
    "intrinsics": None,  # 3x3 text, COLMAP cameras.txt or JSON; else EXIF; else the prior
    "refine_focal": False,  # prior intrinsics only: choose the focal by BA cost on the probe windows
    "init": None,  # starting checkpoint (None: the shipped one)
    "color": None,  # None: the input the checkpoint was trained on; True: RGB frames; False: gray
    # spacing 4 (frames 0, 4, 8, 12: pairs 4-12 frames apart) measured better than 2 on the main job
    # (docs/finetuning.md)
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
        "every": 0,  # every N steps: the self-check and the evaluation pairs (0: before and after only)
        "viz": 4,  # before/after match pictures
        "baselines": [],  # other matchers evaluated on the same pairs (names of load_matcher), e.g. [sift]
    },
    "preflight": {"windows": 4, "static_px": 1.0},
    "probe_windows": 8,  # fixed windows whose BA error is measured before and after
    # label-free self-check: pairs of this many usable windows scored against their SIFT BA poses (0: off)
    "self_check_windows": 12,
}


def select_windows(model: FinetuneModel, windows: VideoWindows, progress: bool = False) -> WindowSelection:
    """The windows training draws from. When the geometry source does not depend on the matcher
    (``sift``, a learned source, their union), every window is reconstructed once here, the ones
    failing the quality gate are left out (so no step is spent on them) and the others'
    reconstructions travel with the windows (:class:`.data.GeometryWindows`). With the matcher's own
    geometry every window stays (failures are skipped during training).

    Under several processes each solves every ``world``-th window and the results are gathered.

    Raises:
        InputError: no window passes the gate (with the reasons).
    """
    t0 = time.perf_counter()
    name = model.source.name
    if model.source.uses_matcher:
        return WindowSelection(name, len(windows), None, {}, 0.0, windows)
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
    seconds = time.perf_counter() - t0
    logger.info("%s geometry: %d of %d windows usable (%.0f s)%s", name, len(usable), len(windows), seconds,
                "".join(f"; {n}x {k}" for k, n in rejected.items()))
    if not usable:
        reasons = ", ".join(f"{n}x {k}" for k, n in rejected.items())[:300]
        raise InputError(
            f"{windows.video.path}: no window of the video gives a usable {name} reconstruction "
            f"({name}: {reasons}); "
            "try another --geometry-from, a larger --window-spacing, more frames, --intrinsics, "
            "or model.min_points=N"
        )
    train_set = GeometryWindows(windows, usable, recs)
    return WindowSelection(name, len(windows), usable, rejected, seconds, train_set)


def train(inputs: Inputs, selection: WindowSelection, accelerator: Any,
          check: list[PseudoPair] | None = None) -> Training:
    """Fine-tune ``inputs.model`` on the selected windows (:class:`~imatch_s2ld.train.trainer.Trainer`).

    Every ``eval.every`` steps (0: never) the main process scores the current matcher on the
    self-check pairs ``check`` (label-free: ``self_check/auc@5|10|20``, ``self_check/median_matches``)
    and on the evaluation pairs if there are any (``eval/auc@5|10|20``, ``eval/precision``); rows go
    to ``OUT/val.jsonl`` and the best by :func:`best_metric` to ``OUT/best.pt``."""
    conf, tconf, out = inputs.conf, dict(inputs.conf["train"]), inputs.out
    check = list(check or [])
    dataset = inputs.dataset
    every, final = int(conf["eval"]["every"]), int(tconf["max_steps"])
    at_end: dict[str, Any] = {}  # the last step's checks, reused as the "after" measurement
    validate = None
    if every > 0 and (dataset is not None or check):

        def validate(m: FinetuneModel, step: int) -> dict[str, float]:
            row: dict[str, float] = {}
            sc = s = None
            if check:
                sc = self_check(m.net, inputs.windows, check)
                assert sc is not None
                row |= {f"self_check/{k}": float(sc[k])
                        for k in ("auc@5", "auc@10", "auc@20", "median_matches")}
            if dataset is not None:
                folder, label, viz = (("after", "s2ld-finetuned", int(conf["eval"]["viz"])) if step == final
                                      else (f"step_{step:06d}", f"s2ld-finetuned@{step}", 0))
                s = evaluate_pairs(m.net, dataset, conf["eval"], out / "eval" / folder, label,
                                   inputs.eval_resize, viz)
                row |= {f"eval/{k}": float(s[k]) for k in ("auc@5", "auc@10", "auc@20", "precision")}
            if step == final:
                at_end.update(self_check=sc, eval=s)
            return row

    tconf["best_metric"] = best_metric(conf, bool(check), dataset is not None)
    train_set = selection.train_set
    sampler = SceneBalancedSampler([len(train_set)], len(train_set), seed=int(tconf["seed"]),
                                   num_replicas=accelerator.num_processes, rank=accelerator.process_index)
    result = Trainer(tconf, out, accelerator).fit(
        inputs.model, train_set, sampler, batch_size=1, num_workers=0, validate=validate,
        val_every=every, val_at_end=True, run_config=conf,  # the last step competes for best.pt
    )
    return Training(result, skip_reasons(out), at_end or None)


def main(conf: Mapping[str, Any] | None = None) -> FinetuneResult | None:
    """Fine-tune on ``conf["video"]`` and write ``conf["out"]`` (see the module docstring).

    Returns:
        every step's result (``.report``: ``OUT/report.json``) on the main process; None on the other
        processes and when the run stopped early (``train.stop_after_steps``: continue with resume).
    Raises:
        InputError: bad input (one line naming the file or option); nothing is written then.
        imatch_s2ld.train.TrainingInterrupted: Ctrl-C/SIGTERM (a checkpoint was saved).
    """
    from .report import write_report

    conf = merge_conf(DEFAULT_CONF, conf)
    start_time = time.perf_counter()
    inputs = check_inputs(conf)
    model, windows, out, tconf = inputs.model, inputs.windows, inputs.out, conf["train"]
    accelerator = create_accelerator(dict(tconf), out)
    main_proc = accelerator.is_main_process
    try:
        logger.info("[1/4] preflight: probing %d windows with the starting matcher",
                    conf["preflight"]["windows"])
        pre = preflight(model, windows, inputs.intrinsics, conf)  # same result on every rank (deterministic)
        windows.K = torch.as_tensor(pre.K, dtype=torch.float32)
        logger.info("%s; %d windows of %d frames; preflight: %d/%d probe windows reconstructed",
                    inputs.intrinsics.description, len(windows), windows.length, pre.probe.success,
                    len(pre.probe.windows))
        selection = select_windows(model, windows, bool(tconf["progress"]) and main_proc)
        candidates = selection.usable if selection.usable is not None else list(range(len(windows)))
        train_set = selection.train_set
        recs = train_set.reconstructions if isinstance(train_set, GeometryWindows) else None
        check = pseudo_pairs(model, windows, candidates, int(conf["self_check_windows"]), recs)
        if main_proc:
            out.mkdir(parents=True, exist_ok=True)
            save_config(conf, out / "config.yaml")
        accelerator.wait_for_everyone()
        model.skip_log_dir = out

        probe_idx = evenly_spaced(len(windows), int(conf["probe_windows"]))
        logger.info("[2/4] starting matcher: BA on %d probe windows%s", len(probe_idx),
                    "" if inputs.dataset is None else " and evaluation pairs")
        before = measure_before(inputs, probe_idx, check, main_proc, bool(tconf["resume"]))
        baselines: dict[str, dict[str, Any]] = {}
        if main_proc and inputs.baselines and inputs.dataset is not None:
            logger.info("[2/4] baselines on the evaluation pairs: %s", ", ".join(inputs.baselines))
            baselines = evaluate_baselines(inputs.baselines, inputs.dataset, conf["eval"],
                                           out / "eval" / "baselines", inputs.eval_resize)
        logger.info("[3/4] fine-tuning for %d steps (%d process(es), geometry from %s)", tconf["max_steps"],
                    accelerator.num_processes, model.source.name)
        training = train(inputs, selection, accelerator, check)
        if not training.result.finished:
            return None
        result = None
        if main_proc:
            logger.info("[4/4] fine-tuned matcher: BA on the probe windows%s, report",
                        "" if inputs.dataset is None else ", evaluation pairs")
            model.net.eval()
            after = measure(inputs, probe_idx, check, "after", "s2ld-finetuned", training.final_checks)
            result = FinetuneResult(inputs, pre, selection, before, after, baselines, training,
                                    time.perf_counter() - start_time)
            write_report(result)
        accelerator.wait_for_everyone()
        return result
    finally:
        accelerator.end_training()
