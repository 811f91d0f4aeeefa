"""Fixtures shared by several test files."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import default_collate

from imatch_s2ld.data.megadepth_train import build_megadepth_dataset
from imatch_s2ld.models import S2LD
from imatch_s2ld.synthetic import generate


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """One intra-op torch thread for the whole suite. CI and development run on 2 cores shared with other
    jobs, where OpenMP's spinning threads are descheduled and wait for each other: the fine-tuning tests
    ran 4-7x slower with 2 threads than with 1 under load (e.g. 147 s vs 33 s). Subprocess tests set
    ``OMP_NUM_THREADS=1`` themselves."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A checkpoint of the ``tiny`` S2LD with random weights (seed 0): plumbing tests only."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    S2LD.from_config("tiny").save_checkpoint(path)
    return path


@pytest.fixture(scope="session")
def batch(tmp_path_factory):
    """A collated training batch of two synthetic pairs (160x120, depth, poses) from one rendered scene."""
    root = tmp_path_factory.mktemp("syn")
    generate("default", root, seed=0, progress=False, num_scenes=1, views=6, video_frames=0, eval_views=0,
             size=(320, 240))
    ds = build_megadepth_dataset(root / "scene_info", root, {"img_resize": 160, "min_overlap": 0.3})
    assert len(ds) >= 2
    return default_collate([ds[0], ds[1]])


def max_grad(net: S2LD, group: str) -> float:
    """Largest |gradient| over the parameters of one of ``net.parameter_groups()`` (0 when none has
    a gradient): tests name stages, not a backbone's layers."""
    prefixes = net.parameter_groups()[group]
    under = [p for n, p in net.named_parameters() if any(n == q or n.startswith(q + ".") for q in prefixes)]
    return max((float(p.grad.abs().max()) for p in under if p.grad is not None), default=0.0)


@pytest.fixture(scope="session")
def facade_video(tmp_path_factory):
    """A 9-frame 320x240 synthetic video with ground truth and 4 held-out views: paths of ``frames``,
    ``intrinsics`` (file), ``pairs`` (held-out pairs_with_gt.txt), ``gt`` (COLMAP model), ``root``."""
    from imatch_s2ld.synthetic import generate

    root = tmp_path_factory.mktemp("facade_video")
    generate("default", root, seed=1, progress=False, layouts=("facade",), num_scenes=1, views=2,
             video_frames=9, eval_views=4, size=(320, 240))
    video = root / "video" / "facade_0000"
    return {"frames": video / "frames", "intrinsics": video / "intrinsics.txt",
            "pairs": video / "eval" / "pairs_with_gt.txt", "gt": video / "gt_sparse", "root": root}


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA"))])
def device(request) -> torch.device:
    """Each device the code must run on: the CPU always, CUDA when present (skipped otherwise)."""
    return torch.device(request.param)
