"""LoFTR-style MegaDepth ``scene_info`` indices (``.npz``): load, validate, write.

The same code reads the real MegaDepth-1500 indices and the synthetic generator's output.
An index is a pickled dict with object arrays indexed by image (``None`` where unused):
``image_paths``, ``depth_paths`` (relative to a root), ``intrinsics`` (3x3), ``poses`` (4x4
world-to-camera), and ``pair_infos``: a list of ``((i, j), overlap_score, central_matches)``.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io import atomic_path

#: List files naming the indices of a folder (generator output, MegaDepth-1500), in priority order.
LIST_FILES = ("scene_list.txt", "megadepth_test_1500.txt")
REQUIRED_KEYS = ("image_paths", "depth_paths", "intrinsics", "poses", "pair_infos")


@dataclass(frozen=True)
class PairInfo:
    """One pair of an index: image indices, overlap score and a central match ``(x0, y0, x1, y1)``."""

    i: int
    j: int
    overlap: float
    central_matches: np.ndarray | None


@dataclass(frozen=True)
class SceneInfo:
    """A loaded ``scene_info`` index. Lists are indexed by image; unused entries are ``None``."""

    path: Path
    image_paths: list[str | None]
    depth_paths: list[str | None]
    intrinsics: list[np.ndarray | None]
    poses: list[np.ndarray | None]
    pairs: list[PairInfo]

    def __len__(self) -> int:
        return len(self.pairs)

    def pairs_in_overlap(self, min_overlap: float, max_overlap: float) -> list[PairInfo]:
        """Pairs whose overlap score lies in ``[min_overlap, max_overlap]``."""
        return [p for p in self.pairs if min_overlap <= p.overlap <= max_overlap]


def _matrix_or_none(value: object, shape: tuple[int, int], what: str, path: Path) -> np.ndarray | None:
    if value is None:
        return None
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != shape:
        raise InputError(f"{path}: {what} has shape {arr.shape}, expected {shape}")
    return arr


def load_scene_info(path: str | os.PathLike) -> SceneInfo:
    """Load and validate a LoFTR-style ``scene_info`` ``.npz`` (real MegaDepth or synthetic).

    Raises:
        InputError: missing/unreadable file, missing keys, or malformed entries (names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: scene_info index not found")
    try:
        loaded = np.load(path, allow_pickle=True)
        # Real LoFTR indices are a pickled dict saved with np.save; accept true .npz archives too.
        raw = dict(loaded.item() if isinstance(loaded, np.ndarray) else loaded)
    except (OSError, ValueError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
        raise InputError(f"{path}: cannot read scene_info index ({type(err).__name__}: {err})") from None
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if missing:
        raise InputError(f"{path}: scene_info index lacks keys {missing}")
    n = len(raw["image_paths"])
    for key in ("depth_paths", "intrinsics", "poses"):
        if len(raw[key]) != n:
            raise InputError(f"{path}: '{key}' has {len(raw[key])} entries, 'image_paths' has {n}")
    image_paths = [None if p is None else str(p) for p in raw["image_paths"]]
    depth_paths = [None if p is None else str(p) for p in raw["depth_paths"]]
    intrinsics = [
        _matrix_or_none(k, (3, 3), f"intrinsics[{i}]", path) for i, k in enumerate(raw["intrinsics"])
    ]
    poses = [_matrix_or_none(t, (4, 4), f"poses[{i}]", path) for i, t in enumerate(raw["poses"])]
    pairs = []
    for k, info in enumerate(raw["pair_infos"]):
        try:
            (i, j), overlap, central = info
            i, j, overlap = int(i), int(j), float(overlap)
        except (TypeError, ValueError):
            raise InputError(f"{path}: pair_infos[{k}] is not ((i, j), overlap, central_matches)") from None
        if not (0 <= i < n and 0 <= j < n) or image_paths[i] is None or image_paths[j] is None:
            raise InputError(f"{path}: pair_infos[{k}] refers to a missing image ({i}, {j})")
        central = None if central is None else np.asarray(central, dtype=np.float64)
        pairs.append(PairInfo(i, j, overlap, central))
    return SceneInfo(path, image_paths, depth_paths, intrinsics, poses, pairs)


def save_scene_info(
    path: str | os.PathLike,
    image_paths: list[str | None],
    depth_paths: list[str | None],
    intrinsics: list[np.ndarray | None],
    poses: list[np.ndarray | None],
    pair_infos: list[tuple[tuple[int, int], float, np.ndarray]],
) -> Path:
    """Write an index with exactly the real MegaDepth-1500 layout.

    Like the LoFTR files, it is a pickled dict written with ``np.save`` under a ``.npz`` name:
    object arrays for the per-image entries, a plain list of ``(ij int64 (2,), score, central (4,))``
    tuples for ``pair_infos``.

    The file is written to a temporary name and renamed, so a crash never leaves half a file.
    """
    path = Path(path)

    def obj_array(items: list) -> np.ndarray:
        arr = np.empty(len(items), dtype=object)
        for k, item in enumerate(items):
            arr[k] = item
        return arr

    pairs = [
        (np.asarray(ij, dtype=np.int64), np.float64(score), np.asarray(central, dtype=np.float64))
        for ij, score, central in pair_infos
    ]
    content = {
        "image_paths": obj_array(image_paths),
        "depth_paths": obj_array(depth_paths),
        "intrinsics": obj_array(intrinsics),
        "poses": obj_array(poses),
        "pair_infos": pairs,
    }
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, content, allow_pickle=True)
    return path


def scene_index_files(index: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """Resolve the ``.npz`` indices of many scenes.

    Args:
        index: a directory (uses its ``scene_list.txt`` or ``megadepth_test_1500.txt`` when present,
            else all ``*.npz`` sorted), a list file (one index name per line, relative to the file's
            folder, ``.npz`` optional), a single ``.npz``, or a sequence of ``.npz`` paths.

    Raises:
        InputError: missing directory/list file/listed index, or no index at all.
    """
    if isinstance(index, (list, tuple)):
        files = [Path(p) for p in index]
        source = "index list"
    else:
        path = Path(index)  # type: ignore[arg-type]
        source = str(path)
        listing: Path | None = None
        if path.is_dir():
            listing = next((path / n for n in LIST_FILES if (path / n).is_file()), None)
            files = [] if listing is not None else sorted(path.glob("*.npz"))
        elif path.is_file() and path.suffix == ".npz":
            files = [path]
        elif path.is_file():
            listing = path
            files = []
        else:
            raise InputError(f"{path}: scene index directory or list file not found")
        if listing is not None:
            for lineno, line in enumerate(listing.read_text().splitlines(), start=1):
                name = line.strip()
                if not name or name.startswith("#"):
                    continue
                f = listing.parent / (name if name.endswith(".npz") else name + ".npz")
                if not f.is_file():
                    raise InputError(f"{listing}:{lineno}: index {f} not found")
                files.append(f)
    for f in files:
        if not f.is_file():
            raise InputError(f"{f}: scene_info index not found ({source})")
    if not files:
        raise InputError(f"{source}: no scene_info .npz index found")
    return files
