"""Datasets for relative-pose evaluation: every reader returns ``list[PairSample]``."""

from .colmap import ColmapPairsConfig, read_colmap_pairs
from .datasets import DATASETS, DatasetConfig, load_pairs
from .images import parse_resize, read_image, resize_image, to_grayscale
from .megadepth import read_megadepth_pairs
from .pairs_file import find_pairs_files, read_pairs_file, write_pairs_file
from .sample import PairSample
from .scannet import read_scannet_pairs

__all__ = [
    "DATASETS", "ColmapPairsConfig", "DatasetConfig", "PairSample", "find_pairs_files",
    "load_pairs", "parse_resize", "read_colmap_pairs", "read_image", "read_megadepth_pairs",
    "read_pairs_file", "read_scannet_pairs", "resize_image", "to_grayscale", "write_pairs_file",
]
