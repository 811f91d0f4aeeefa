"""Matchers: ``load_matcher("sift" | "orb" | "loftr:WEIGHTS", **conf)``.

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

register_matcher("sift", sift_matcher)
register_matcher("orb", orb_matcher)
register_matcher("loftr", loftr_matcher)

__all__ = [
    "LoFTRMatcher", "Matcher", "MatcherFactory", "OpenCVMatcher", "available_matchers",
    "load_matcher", "register_matcher", "wants_grayscale",
]
