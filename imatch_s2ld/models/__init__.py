"""The S2LD network: ``S2LD.from_config("aliked" | "tiny" | "base")`` or ``S2LD.from_checkpoint(path)``."""

from ..conf import merge_conf
from .fine import FineLevel
from .s2ld import S2LD, ImageEncoding, S2LDOutput, named_configs, s2ld_matcher

__all__ = ["S2LD", "FineLevel", "ImageEncoding", "S2LDOutput", "merge_conf", "named_configs", "s2ld_matcher"]
