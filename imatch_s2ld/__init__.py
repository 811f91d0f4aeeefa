"""imatch_s2ld: S2LD feature matching, relative-pose evaluation, and self-supervised fine-tuning.

Public entry points:
    load_matcher(name) -> object with ``match(image0, image1) -> (kpts0, kpts1, confidence)``.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "load_matcher"]


def load_matcher(name: str, **conf):
    """Return a matcher by name (``"sift"``, ``"orb"``, ``"loftr:WEIGHTS"``...).

    See :mod:`imatch_s2ld.matchers` for the names and their options.
    """
    from .matchers import load_matcher as _load

    return _load(name, **conf)
