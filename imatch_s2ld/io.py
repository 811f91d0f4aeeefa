"""File helpers: atomic writes (a crash or Ctrl-C never leaves half a file under the final name) and
reading torch files with one-line errors."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, first_line


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` if the block succeeds.

    The parent folder is created. On an exception the temporary file is removed and ``path`` is
    left as it was. The file gets the mode of an ordinary new file (``0666`` less the umask), not the
    temporary file's ``0600``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=suffix or path.suffix, prefix=".tmp_", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: put it back at once
    os.umask(mask)
    return mask


def read_torch_file(path: str | os.PathLike, what: str, map_location: Any = "cpu",
                    missing_hint: str = "") -> Any:
    """``torch.load(path, weights_only=True)`` with one-line errors naming the file.

    Args:
        what: what the file is, for the messages (e.g. ``"S2LD checkpoint"``).
        missing_hint: appended to the not-found message (e.g. ``" (nothing to resume)"``).
    Raises:
        InputError: ``"{path}: {what} not found{missing_hint}"`` or
            ``"{path}: cannot read {what} (first line of the loader's error)"``.
    """
    import pickle
    import zipfile

    import torch

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {what} not found{missing_hint}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
        raise InputError(f"{path}: cannot read {what} ({first_line(err)})") from None


def read_npz(path: str | os.PathLike, what: str, keys: tuple[str, ...] = (),
             missing_hint: str = "") -> dict[str, Any]:
    """All arrays of an ``.npz`` file (no pickles) with one-line errors naming the file.

    Args:
        what: what the file is, for the messages (e.g. ``"ScanNet index"``).
        keys: arrays that must be present.
        missing_hint: appended to the "not found" message (e.g. ``" (--index)"``).
    Raises:
        InputError: missing file, unreadable archive, or a missing array.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {what} file not found{missing_hint}")
    try:
        with np.load(path) as data:
            content = {k: data[k] for k in data.files}
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: cannot read {what} ({err})") from None
    missing = [k for k in keys if k not in content]
    if missing:
        raise InputError(f"{path}: lacks arrays {missing}")
    return content
