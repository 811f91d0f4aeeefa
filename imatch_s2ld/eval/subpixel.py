"""Sub-pixel accuracy of matches against exact ground truth (depth + poses): ``measure(matcher, pairs)``.

For each pair of a MegaDepth-layout dataset (the synthetic generator writes one), the final matches (of an
S2LD, or of any registered matcher) are compared with the depth warp of their keypoint in image 0 (the LoFTR
occlusion check; matches without a valid warp are left out). Reported: MMA at 0.5 / 1 / 3 / 5 px (share of
matches within the threshold), the median error, the same for every local-dense level, and the calibration
of the predicted uncertainty: the Spearman rank correlation between predicted std and error, and the share
of errors within 1x and 2x the predicted std (the std is the radial one, ``sqrt(var_x + var_y)``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

from ..geometry import warp_keypoints

__all__ = ["MMA_THRESHOLDS", "measure", "summarize"]

MMA_THRESHOLDS = (0.5, 1.0, 3.0, 5.0)


@torch.no_grad()
def measure(matcher: Any, pairs: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Run ``matcher`` on each pair (items of :class:`~imatch_s2ld.data.megadepth_train.MegaDepthPairDataset`,
    not collated) and summarise (:func:`summarize`). ``matcher``: an :class:`~imatch_s2ld.models.S2LD`
    (its levels and predicted std are measured too) or any :class:`~imatch_s2ld.matchers.Matcher` (given
    the images as uint8)."""
    from ..models.s2ld import S2LD

    errors: list[np.ndarray] = []
    level_errors: list[list[np.ndarray]] = []
    stds: list[np.ndarray] = []
    seconds = []
    is_s2ld = isinstance(matcher, S2LD)
    if is_s2ld:
        matcher.eval()
    for item in pairs:
        t0 = time.perf_counter()
        if is_s2ld:
            out = matcher(item["image0"][None], item["image1"][None])
            k0, k1, std = out.mkpts0.float(), out.mkpts1.float(), out.muncertainty.float()
            levels = [lv.expectation.float() for lv in out.fine_levels]
        else:
            images = [(item[k][0] * 255).round().byte().numpy() for k in ("image0", "image1")]
            a, b, _ = matcher.match(*images)
            k0, k1 = torch.from_numpy(a).float(), torch.from_numpy(b).float()
            std, levels = torch.full((len(k0),), float("nan")), []
        seconds.append(time.perf_counter() - t0)
        valid, warped = warp_keypoints(k0[None], item["depth0"][None].float(), item["depth1"][None].float(),
                                       item["T_0to1"][None].float(), item["K0"][None].float(),
                                       item["K1"][None].float())
        valid, warped = valid[0], warped[0]
        errors.append((k1 - warped).norm(dim=-1)[valid].numpy())
        stds.append(std[valid].numpy())
        level_errors.append([(lv - warped).norm(dim=-1)[valid].numpy() for lv in levels])
    return summarize(errors, stds, level_errors, seconds)


def summarize(errors: list[np.ndarray], stds: list[np.ndarray], level_errors: list[list[np.ndarray]],
              seconds: list[float]) -> dict[str, Any]:
    """Pool per-pair errors ``(M_p,)`` (pixels), predicted stds ``(M_p,)`` and per-level errors into the
    summary: ``pairs``, ``matches``, ``mma@<t>px`` (percent), ``median_error_px``, ``levels`` (per level:
    ``median_error_px``, ``mma@1px``), ``std_error_spearman``, ``within_1std`` / ``within_2std`` (percent),
    ``seconds_per_pair``."""
    err = np.concatenate(errors) if errors else np.zeros(0)
    std = np.concatenate(stds) if stds else np.zeros(0)
    out: dict[str, Any] = {"pairs": len(errors), "matches": int(len(err))}
    for t in MMA_THRESHOLDS:
        out[f"mma@{t:g}px"] = float(100 * (err < t).mean()) if len(err) else float("nan")
    out["median_error_px"] = float(np.median(err)) if len(err) else float("nan")
    levels = []
    for k in range(min((len(p) for p in level_errors), default=0)):
        e = np.concatenate([pair[k] for pair in level_errors])
        levels.append({"median_error_px": float(np.median(e)) if len(e) else float("nan"),
                       "mma@1px": float(100 * (e < 1).mean()) if len(e) else float("nan")})
    out["levels"] = levels
    if len(err) > 2 and np.isfinite(std).all() and np.ptp(std) > 0:
        ranks = [np.argsort(np.argsort(x)).astype(float) for x in (std, err)]
        out["std_error_spearman"] = float(np.corrcoef(*ranks)[0, 1])
    else:
        out["std_error_spearman"] = float("nan")
    calibrated = len(err) and np.isfinite(std).all()
    out["within_1std"] = float(100 * (err <= std).mean()) if calibrated else float("nan")
    out["within_2std"] = float(100 * (err <= 2 * std).mean()) if calibrated else float("nan")
    out["seconds_per_pair"] = float(np.mean(seconds)) if seconds else float("nan")
    return out
