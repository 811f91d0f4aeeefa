"""The fine-tuning loss terms, by name (:data:`TERMS`). Each is one file; see :mod:`.base`."""

from __future__ import annotations

from .base import LossTerm, Pair, Window
from .matching import MatchingTerm
from .reprojection import REPROJECTION_POINTS, ReprojectionTerm
from .track import TrackTerm
from .triangulation import TriangulationTerm

#: Term name -> class; the loss's options are the union of their ``default_conf`` (in this order).
TERMS: dict[str, type[LossTerm]] = {
    "reprojection": ReprojectionTerm,
    "matching": MatchingTerm,
    "triangulation": TriangulationTerm,
    "track": TrackTerm,
}

__all__ = ["REPROJECTION_POINTS", "TERMS", "LossTerm", "MatchingTerm", "Pair", "ReprojectionTerm",
           "TrackTerm", "TriangulationTerm", "Window"]
