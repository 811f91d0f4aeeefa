"""Reader for SuperGlue/LoFTR ``pairs_with_gt.txt`` files.

Each non-empty line (``#`` starts a comment) is::

    name0 name1 rot0 rot1 K0(9, row-major) K1(9) T_0to1(16, row-major)

EXIF rotations: SuperGlue rotates images, intrinsics and pose for ``rot != 0``. This reader
**rejects** such lines with an :class:`InputError` instead (none of the supported datasets uses
them, and a silent half-implemented rotation would corrupt the ground truth).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from .sample import PairSample, check_intrinsics, check_pose

NUM_FIELDS = 2 + 2 + 9 + 9 + 16
PAIRS_FILE_NAME = "pairs_with_gt.txt"


def default_images_dir(pairs_path: Path) -> Path:
    """``<dir of pairs file>/images`` when it exists, else the pairs file's directory."""
    candidate = pairs_path.parent / "images"
    return candidate if candidate.is_dir() else pairs_path.parent


def parse_pairs_line(line: str, where: str) -> tuple[
    str, str, int, int, np.ndarray, np.ndarray, np.ndarray
]:
    """Parse one line into ``(name0, name1, rot0, rot1, K0, K1, T_0to1)``.

    Raises:
        InputError: malformed line; the message starts with ``where`` (``file:line``).
    """
    tokens = line.split()
    if len(tokens) == 2:
        raise InputError(
            f"{where}: only image names, no ground truth (expected {NUM_FIELDS} fields: "
            "name0 name1 rot0 rot1 K0(9) K1(9) T_0to1(16))"
        )
    if len(tokens) != NUM_FIELDS:
        raise InputError(
            f"{where}: expected {NUM_FIELDS} fields (name0 name1 rot0 rot1 K0(9) K1(9) "
            f"T_0to1(16)), got {len(tokens)}"
        )
    name0, name1 = tokens[:2]
    try:
        rot0, rot1 = int(tokens[2]), int(tokens[3])
        values = np.array([float(v) for v in tokens[4:]], dtype=np.float64)
    except ValueError as err:
        raise InputError(f"{where}: non-numeric field ({err})") from None
    if rot0 % 4 != 0 or rot1 % 4 != 0:
        raise InputError(
            f"{where}: EXIF rotation rot0={rot0} rot1={rot1} is not supported (only 0); "
            "rotate the images and ground truth beforehand"
        )
    K0 = check_intrinsics(values[:9].reshape(3, 3), f"{where}: K0")
    K1 = check_intrinsics(values[9:18].reshape(3, 3), f"{where}: K1")
    T = check_pose(values[18:].reshape(4, 4), f"{where}: T_0to1")
    return name0, name1, 0, 0, K0, K1, T


def read_pairs_file(
    path: str | os.PathLike,
    images_dir: str | os.PathLike | None = None,
    dataset: str = "pairs",
    scene: str | None = None,
    max_pairs: int | None = None,
    check_images: bool = True,
) -> list[PairSample]:
    """Read a ``pairs_with_gt.txt`` file.

    Args:
        path: the pairs file.
        images_dir: directory the image names are relative to (default: :func:`default_images_dir`).
        dataset, scene: labels stored in each sample (scene defaults to the file's parent dir name).
        max_pairs: keep only the first ``max_pairs`` pairs (all lines are still validated).
        check_images: raise if an image of a kept pair does not exist.

    Raises:
        InputError: missing file, malformed line (``file:line: ...``), or missing image.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: pairs file not found")
    images = Path(images_dir) if images_dir is not None else default_images_dir(path)
    if not images.is_dir():
        raise InputError(f"{images}: images directory not found (--images)")
    scene = path.parent.name if scene is None else scene
    samples = []
    with open(path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, start=1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            name0, name1, rot0, rot1, K0, K1, T = parse_pairs_line(line, f"{path}:{lineno}")
            sample = PairSample(
                name0, name1, images / name0, images / name1, K0, K1, T, rot0, rot1,
                dataset=dataset, scene=scene,
            )
            if max_pairs is None or len(samples) < max_pairs:
                if check_images:
                    for p in (sample.path0, sample.path1):
                        if not p.is_file():
                            raise InputError(f"{p}: image not found (listed in {path}:{lineno})")
                samples.append(sample)
    if not samples:
        raise InputError(f"{path}: no pairs in file")
    return samples


def write_pairs_file(path: str | os.PathLike, samples: list[PairSample]) -> Path:
    """Write samples in the ``pairs_with_gt.txt`` format (full float precision)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for s in samples:
            nums = np.concatenate([s.K0.ravel(), s.K1.ravel(), s.T_0to1.ravel()])
            fields = [s.name0, s.name1, str(s.rot0), str(s.rot1)] + [repr(float(v)) for v in nums]
            f.write(" ".join(fields) + "\n")
    return path


def find_pairs_files(data: str | os.PathLike) -> list[Path]:
    """Pairs files of a synthetic-style dataset directory.

    ``data`` may be a pairs file, a directory holding ``pairs_with_gt.txt``, or a directory whose
    sub-directories (any depth) hold ``pairs_with_gt.txt`` files (one scene each, sorted).

    Raises:
        InputError: nothing found (names ``--data``).
    """
    data = Path(data)
    if data.is_file():
        return [data]
    if not data.is_dir():
        raise InputError(f"{data}: --data directory not found")
    direct = data / PAIRS_FILE_NAME
    if direct.is_file():
        return [direct]
    found = sorted(data.rglob(PAIRS_FILE_NAME))
    if not found:
        raise InputError(f"{data}: no {PAIRS_FILE_NAME} in --data directory or its subdirectories")
    return found
