"""Fixtures shared by several test files."""

from __future__ import annotations

import pytest
import torch

from imatch_s2ld.models import S2LD


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


def max_grad(net: S2LD, group: str) -> float:
    """Largest |gradient| over the parameters of one of ``net.parameter_groups()`` (0 when none has
    a gradient): tests name stages, not a backbone's layers."""
    prefixes = net.parameter_groups()[group]
    under = [p for n, p in net.named_parameters() if any(n == q or n.startswith(q + ".") for q in prefixes)]
    return max((float(p.grad.abs().max()) for p in under if p.grad is not None), default=0.0)
