"""The supervised S2LD loss terms, by name (:data:`TERMS`). Each is one file; see :mod:`.base`."""

from __future__ import annotations

from .base import SupervisedTerm
from .coarse import CoarseTerm
from .fine import FineTerm
from .gauss_newton import GaussNewtonTerm
from .keypoints import KeypointTerm
from .triangulation import TriangulationTerm

#: Term name -> class, in the order their weighted losses are summed.
TERMS: dict[str, type[SupervisedTerm]] = {
    "coarse": CoarseTerm,
    "fine": FineTerm,
    "keypoints": KeypointTerm,
    "triangulation": TriangulationTerm,
    "gauss_newton": GaussNewtonTerm,
}

__all__ = ["TERMS", "CoarseTerm", "FineTerm", "GaussNewtonTerm", "KeypointTerm", "SupervisedTerm",
           "TriangulationTerm"]
