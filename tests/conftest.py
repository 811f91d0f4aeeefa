"""Fixtures shared by several test files."""

from __future__ import annotations

import pytest
import torch

from imatch_s2ld.models import S2LD


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A checkpoint of the ``tiny`` S2LD with random weights (seed 0): plumbing tests only."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    S2LD.from_config("tiny").save_checkpoint(path)
    return path
