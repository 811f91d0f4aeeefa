"""Matchers: ``load_matcher("sift" | "orb" | "loftr:WEIGHTS" | "s2ld" | "s2ld:CHECKPOINT", **conf)``.

Add a matcher with :func:`register_matcher` (``factory(arg, **conf) -> Matcher``).
"""

from .base import (
    Matcher,
    MatcherFactory,
    available_matchers,
    load_matcher,
    register_matcher,
    wants_grayscale,
)
from .loftr import LoFTRMatcher, loftr_matcher
from .opencv import OpenCVMatcher, orb_matcher, sift_matcher


def _s2ld_matcher(arg: str | None = None, **conf) -> Matcher:
    from ..models.s2ld import s2ld_matcher  # imported on use: keeps `import imatch_s2ld` light

    return s2ld_matcher(arg, **conf)


register_matcher("sift", sift_matcher)
register_matcher("orb", orb_matcher)
register_matcher("loftr", loftr_matcher)
register_matcher("s2ld", _s2ld_matcher)

__all__ = [
    "LoFTRMatcher", "Matcher", "MatcherFactory", "OpenCVMatcher", "available_matchers",
    "load_matcher", "register_matcher", "wants_grayscale",
]
