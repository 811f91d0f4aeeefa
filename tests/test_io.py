"""File helpers: atomic writes and torch files read with one-line errors."""

from __future__ import annotations

import pytest
import torch

from helpers import raises_one_line
from imatch_s2ld.errors import InputError
from imatch_s2ld.io import atomic_path, read_torch_file


def test_read_torch_file_roundtrip_and_errors(tmp_path):
    path = tmp_path / "w.pt"
    with atomic_path(path) as tmp:
        torch.save({"state_dict": {"a": torch.ones(2)}}, tmp)
    assert torch.equal(read_torch_file(path, "weights")["state_dict"]["a"], torch.ones(2))

    with pytest.raises(InputError, match=r"^\S*missing\.pt: checkpoint not found \(nothing to resume\)$"):
        read_torch_file(tmp_path / "missing.pt", "checkpoint", missing_hint=" (nothing to resume)")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a torch file")
    raises_one_line(read_torch_file, corrupt, "S2LD checkpoint",
                    match=r"corrupt\.pt: cannot read S2LD checkpoint \(")


def test_read_npz_one_line_errors(tmp_path):
    import numpy as np

    from imatch_s2ld.io import read_npz

    good = tmp_path / "a.npz"
    np.savez(good, x=np.arange(3))
    assert read_npz(good, "thing", ("x",))["x"].tolist() == [0, 1, 2]
    with pytest.raises(InputError, match=r"missing\.npz: thing file not found \(--index\)"):
        read_npz(tmp_path / "missing.npz", "thing", missing_hint=" (--index)")
    with pytest.raises(InputError, match=r"a\.npz: lacks arrays \['y'\]"):
        read_npz(good, "thing", ("x", "y"))
    (tmp_path / "bad.npz").write_text("not an archive")
    with pytest.raises(InputError, match=r"bad\.npz: cannot read thing"):
        read_npz(tmp_path / "bad.npz", "thing")


def test_atomic_files_get_the_umask_mode(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "a.json") as tmp:
            tmp.write_text("{}")
        os.umask(0o027)
        with atomic_path(tmp_path / "b.json") as tmp:
            tmp.write_text("{}")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644  # like open(), not mkstemp's 0600
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o640


def test_checkpoint_checksum_names_a_corrupted_file(tmp_path):
    from imatch_s2ld.train.checkpoint import load_checkpoint, save_checkpoint, weights_checksum

    path = save_checkpoint(tmp_path / "last.pt", {"state_dict": {"w": torch.arange(6.0)}, "training": {}})
    ckpt = load_checkpoint(path)
    assert ckpt["checksum"] == weights_checksum({"w": torch.arange(6.0)})
    assert weights_checksum({"w": torch.arange(6.0).double()}) != ckpt["checksum"]  # dtype counts
    ckpt["state_dict"]["w"][3] = float("nan")  # bytes changed behind the checksum's back
    torch.save(ckpt, path)
    with pytest.raises(InputError, match=r"last\.pt: corrupted checkpoint"):
        load_checkpoint(path)
