"""``--refine-focal``: from the prior focal (1.2 x the longer side), the preflight's profile search (coarse
grid + golden-section/parabola stage) recovers the true focal of a synthetic video."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from imatch_s2ld.conf import merge_conf
from imatch_s2ld.finetune import open_video, resolve_intrinsics
from imatch_s2ld.finetune.data import VideoWindows
from imatch_s2ld.finetune.model import FinetuneModel
from imatch_s2ld.finetune.probe import _parabola_vertex, preflight
from imatch_s2ld.finetune.run import DEFAULT_CONF
from imatch_s2ld.models.s2ld import S2LD
from imatch_s2ld.synthetic import generate


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """13 frames (one window of 4 frames spaced 4, the default) of 160x120, 65 deg field of view
    (fx = 125.6 px).

    The focal is only observable through the camera's rotation (a translating camera fits any focal),
    hence the long window (3 m; the trajectory turns with the street). Seeds 1-5 all give the focal
    within 2.5%."""
    root = tmp_path_factory.mktemp("focal")
    generate("default", root, seed=1, progress=False, layouts=("facade",), num_scenes=1, views=0,
             video_frames=13, eval_views=0, size=(160, 120), video_step=0.25)
    return root / "video" / "facade_0000"


def test_refine_focal_recovers_the_true_focal_from_the_prior(video: Path, tiny_checkpoint: Path) -> None:
    frames = open_video(video / "frames")
    intr = resolve_intrinsics(frames, None)  # PNG frames, no EXIF: the prior
    true_fx = float(np.loadtxt(video / "intrinsics.txt")[0, 0])
    assert intr.source == "prior" and intr.K[0, 0] / true_fx > 1.4  # the prior is far off (192 px)
    windows = VideoWindows(frames, intr.K, length=4, spacing=4)
    # SIFT geometry: the window's tracks do not depend on S2LD, so its random tiny weights do
    model = FinetuneModel(S2LD.from_checkpoint(tiny_checkpoint), {"geometry_from": "sift"})
    conf = merge_conf(DEFAULT_CONF, {"refine_focal": True, "preflight": {"windows": 1}})
    pre = preflight(model, windows, intr, conf)

    K, search = pre.K, pre.focal_search
    assert abs(K[0, 0] / true_fx - 1) < 0.05, search
    assert K[1, 1] == K[0, 0] and np.allclose(K[:2, 2], intr.K[:2, 2]) and K[2, 2] == 1
    assert search["fx"] == pytest.approx(K[0, 0], abs=0.01) and search["prior_fx"] == intr.K[0, 0]
    assert search["windows"] == [0]
    stages = [e["stage"] for e in search["evaluations"]]
    assert stages.count("coarse") == 8 and 1 <= stages.count("fine") <= 5
    coarse = [e["fx"] for e in search["evaluations"] if e["stage"] == "coarse"]
    assert min(abs(fx / true_fx - 1) for fx in coarse) > 0.05  # the coarse grid alone is not enough


def test_parabola_vertex() -> None:
    f = [(t - 0.3) ** 2 + 1 for t in (-1.0, 0.0, 0.5)]
    assert _parabola_vertex(-1.0, 0.0, 0.5, *f) == pytest.approx(0.3)
    assert _parabola_vertex(-1.0, 0.0, 0.5, 0.0, 1.0, 0.0) is None  # concave
    assert _parabola_vertex(0.0, 0.0, 0.5, 2.0, 1.0, 2.0) is None  # bracket at an edge
    assert _parabola_vertex(-1.0, 0.0, 0.5, float("inf"), 1.0, 2.0) is None  # a failed evaluation
