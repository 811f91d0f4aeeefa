"""Matchers: ``load_matcher("sift" | "orb" | "loftr:WEIGHTS" | "s2ld" | "s2ld:CHECKPOINT" |
"aliked+lightglue" | "disk+lightglue" | "dfm:disk" | "gcm:disk", **conf)``.

Add a matcher with :func:`register_matcher` (``factory(arg, **conf) -> Matcher``).
"""

from functools import partial

from .base import (
    Matcher,
    MatcherFactory,
    available_matchers,
    check_matcher,
    load_matcher,
    parse_matcher_options,
    register_matcher,
    wants_grayscale,
)
from .loftr import LoFTRMatcher, loftr_matcher
from .opencv import OpenCVMatcher, orb_matcher, sift_matcher


def _s2ld_matcher(arg: str | None = None, **conf) -> Matcher:
    from ..models.s2ld import s2ld_matcher  # imported on use: keeps `import imatch_s2ld` light

    return s2ld_matcher(arg, **conf)


def _aliked_lightglue(arg: str | None = None, **conf) -> Matcher:
    from .lightglue import lightglue_matcher  # imported on use, like the S2LD matcher

    return lightglue_matcher("aliked", arg, **conf)


def _disk_lightglue(arg: str | None = None, **conf) -> Matcher:
    from .lightglue import lightglue_matcher

    return lightglue_matcher("disk", arg, **conf)


def _hierarchical(mode: str, arg: str | None = None, **conf) -> Matcher:
    from .hierarchical import hierarchical_matcher

    return hierarchical_matcher(mode, arg, **conf)


def _hierarchical_check(mode: str, arg: str | None = None, **conf) -> None:
    from .hierarchical import hierarchical_check

    hierarchical_check(mode, arg, **conf)


def _aliked_lightglue_check(arg: str | None = None, **conf) -> None:
    from .lightglue import lightglue_check

    lightglue_check("aliked", arg, **conf)


def _disk_lightglue_check(arg: str | None = None, **conf) -> None:
    from .lightglue import lightglue_check

    lightglue_check("disk", arg, **conf)


register_matcher("sift", sift_matcher)
register_matcher("orb", orb_matcher)
register_matcher("loftr", loftr_matcher)
register_matcher("s2ld", _s2ld_matcher)
register_matcher("aliked+lightglue", _aliked_lightglue, check=_aliked_lightglue_check)
register_matcher("disk+lightglue", _disk_lightglue, check=_disk_lightglue_check)
for _mode in ("dfm", "gcm"):
    register_matcher(_mode, partial(_hierarchical, _mode), check=partial(_hierarchical_check, _mode))

__all__ = [
    "LoFTRMatcher", "Matcher", "MatcherFactory", "OpenCVMatcher", "available_matchers", "check_matcher",
    "load_matcher", "parse_matcher_options", "register_matcher", "wants_grayscale",
]
