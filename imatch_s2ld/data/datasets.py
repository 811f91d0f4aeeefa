"""Dataset dispatch: one config -> ``list[PairSample]`` for every supported dataset."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from .colmap import ColmapPairsConfig, read_colmap_pairs
from .megadepth import read_megadepth_pairs
from .pairs_file import find_pairs_files, read_pairs_file
from .sample import PairSample
from .scannet import read_scannet_pairs

DATASETS = ("pairs", "colmap", "megadepth1500", "scannet1500", "synthetic")

#: ``<repo>/../shared/data``: default location of the shared index files (may be absent).
SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@dataclass(frozen=True)
class DatasetConfig:
    """Which pairs to evaluate. Unused fields are ignored by the other datasets.

    Attributes:
        name: one of :data:`DATASETS`.
        pairs: ``pairs``: the ``pairs_with_gt.txt`` file.
        images: ``pairs``/``colmap``: images directory (``pairs``: default ``<pairs dir>/images``
            or the pairs dir; ``colmap``: default ``<model>/../images``).
        data: ``synthetic``: a pairs file, a dir with ``pairs_with_gt.txt``, or a dir of scenes.
        model: ``colmap``: the model directory (text or binary).
        root: ``megadepth1500``/``scannet1500``: the image root.
        index: ``megadepth1500``/``scannet1500``: index directory (default: the shared copy).
        max_pairs: keep only the first pairs.
        min_covisible, max_angle_deg: ``colmap`` pair selection.
    """

    name: str = "pairs"
    pairs: str | None = None
    images: str | None = None
    data: str | None = None
    model: str | None = None
    root: str | None = None
    index: str | None = None
    max_pairs: int | None = None
    min_covisible: int = 100
    max_angle_deg: float = 45.0


def _require(value: str | None, option: str, dataset: str) -> str:
    if value is None:
        raise InputError(f"{option} is required for --dataset {dataset}")
    return value


def _default_index(conf: DatasetConfig, folder: str) -> str:
    if conf.index is not None:
        return conf.index
    shared = SHARED_DATA / folder
    if not shared.is_dir():
        raise InputError(f"--index is required for --dataset {conf.name} ({shared} not found)")
    return str(shared)


def load_pairs(conf: DatasetConfig) -> list[PairSample]:
    """Read the pairs described by ``conf``.

    Raises:
        InputError: unknown dataset, missing option, or any reader error (names file/argument).
    """
    if conf.max_pairs is not None and conf.max_pairs <= 0:
        raise InputError(f"--max-pairs must be positive, got {conf.max_pairs}")
    name = conf.name
    if name == "pairs":
        return read_pairs_file(
            _require(conf.pairs, "--pairs", name), conf.images, dataset=name,
            max_pairs=conf.max_pairs,
        )
    if name == "synthetic":
        samples: list[PairSample] = []
        data = Path(_require(conf.data, "--data", name))
        for path in find_pairs_files(data):
            remaining = None if conf.max_pairs is None else conf.max_pairs - len(samples)
            if remaining == 0:
                break
            # Scene = the pairs file's folder relative to --data (unique: several generator
            # scenes have an ``eval/`` folder), or the folder's own name for a single file.
            rel = path.parent.relative_to(data) if data.is_dir() else Path()
            scene = rel.as_posix() if rel != Path() else path.parent.name
            samples += read_pairs_file(path, None, dataset=name, scene=scene, max_pairs=remaining)
        return samples
    if name == "colmap":
        model = Path(_require(conf.model, "--model", name))
        images = conf.images if conf.images is not None else str(model.parent / "images")
        return read_colmap_pairs(
            model, images, ColmapPairsConfig(conf.min_covisible, conf.max_angle_deg),
            dataset=name, max_pairs=conf.max_pairs,
        )
    if name == "megadepth1500":
        index = _default_index(conf, "megadepth_test_1500_index")
        return read_megadepth_pairs(
            index, _require(conf.root, "--root", name), dataset=name, max_pairs=conf.max_pairs
        )
    if name == "scannet1500":
        index = _default_index(conf, "scannet_test_1500_index")
        return read_scannet_pairs(
            index, _require(conf.root, "--root", name), dataset=name, max_pairs=conf.max_pairs
        )
    raise InputError(f"--dataset: unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
