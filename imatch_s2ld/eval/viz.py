"""Figures: cumulative pose-error curve and side-by-side match visualisations."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_auc_curve(
    errors: dict[str, Sequence[float]], path: str | Path, max_threshold: float = 20.0,
    title: str = "",
) -> Path:
    """Plot cumulative recall (fraction of pairs with error <= x) against x in degrees.

    Args:
        errors: label -> per-pair errors in degrees (inf = failure), e.g. ``{"max(R,t)": [...]}``.
        path: output PNG.
        max_threshold: right end of the x axis (the largest AUC threshold).
    """
    path = Path(path)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    xs = np.linspace(0.0, max_threshold, 401)
    for label, errs in errors.items():
        e = np.asarray(errs, dtype=np.float64)
        e = np.where(np.isfinite(e), e, np.inf)
        recall = (e[None, :] <= xs[:, None]).mean(1) if len(e) else np.zeros_like(xs)
        ax.plot(xs, 100.0 * recall, label=label)
    ax.set_xlabel("error threshold (degrees)")
    ax.set_ylabel("pairs with error below threshold (%)")
    ax.set_xlim(0, max_threshold)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    if title:
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def draw_matches(
    image0: np.ndarray, image1: np.ndarray, kpts0: np.ndarray, kpts1: np.ndarray,
    correct: np.ndarray, path: str | Path, text: str = "", max_lines: int = 1000, seed: int = 0,
    colors: np.ndarray | None = None,
) -> Path:
    """Save the two RGB images side by side with match lines (green correct, red wrong).

    Args:
        image0, image1: (H, W, 3) RGB or (H, W) uint8.
        kpts0, kpts1: (N, 2) pixels; correct: (N,) bool.
        text: a line written in a black band above the images.
        max_lines: draw a random subset of at most this many matches (in input order when all fit).
        colors: optional (N, 3) uint8 line colours in OpenCV's BGR order, replacing the
            correct/wrong colours.
    """
    def rgb(im: np.ndarray) -> np.ndarray:
        return np.repeat(im[..., None], 3, axis=2) if im.ndim == 2 else im

    im0, im1 = rgb(image0), rgb(image1)
    h = max(im0.shape[0], im1.shape[0])
    canvas = np.zeros((h, im0.shape[1] + im1.shape[1], 3), dtype=np.uint8)
    canvas[: im0.shape[0], : im0.shape[1]] = im0
    canvas[: im1.shape[0], im0.shape[1]:] = im1
    canvas = cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR)
    idx = np.arange(len(kpts0))
    if len(idx) > max_lines:
        idx = np.random.default_rng(seed).choice(idx, max_lines, replace=False)
    offset = np.array([im0.shape[1], 0.0])
    for i in idx:
        if colors is not None:
            color = tuple(int(c) for c in colors[i])
        else:
            color = (0, 200, 0) if correct[i] else (0, 0, 255)
        p0 = tuple(int(round(v)) for v in kpts0[i])
        p1 = tuple(int(round(v)) for v in kpts1[i] + offset)
        cv2.line(canvas, p0, p1, color, 1, cv2.LINE_AA)
        cv2.circle(canvas, p0, 2, color, -1, cv2.LINE_AA)
        cv2.circle(canvas, p1, 2, color, -1, cv2.LINE_AA)
    if text:
        band = np.zeros((28, canvas.shape[1], 3), dtype=np.uint8)
        cv2.putText(band, text, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1,
                    cv2.LINE_AA)
        canvas = np.concatenate([band, canvas], axis=0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), canvas)
    return path
