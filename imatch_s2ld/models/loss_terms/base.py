"""What a supervised S2LD loss term is (:class:`SupervisedTerm`); the loss is :class:`..s2ld_loss.S2LDLoss`.

A term is one small object: it declares its options (``default_conf``, merged flat into
``model.loss``), the weighted losses it returns (``outputs``, each with a weight ``<output>_weight``) and
computes them, unweighted, with its detached metrics, from the network output of a supervised forward
pass. Adding a term = one file in this package plus its line in :data:`.TERMS` (docs/extending.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from torch import Tensor

if TYPE_CHECKING:
    from ..s2ld import S2LDOutput

__all__ = ["SupervisedTerm"]


class SupervisedTerm:
    """Base class: ``name``, ``outputs`` (the weighted entries), ``default_conf``."""

    name: ClassVar[str]
    outputs: ClassVar[tuple[str, ...]]
    default_conf: ClassVar[dict[str, Any]]

    def __init__(self, conf: Mapping[str, Any]) -> None:
        """``conf``: the whole merged ``model.loss`` configuration."""
        self.conf = conf

    def __call__(self, pred: S2LDOutput, batch: Mapping[str, Any],
                 window_radii: tuple[float, ...]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Returns the unweighted losses (0-d, keys ``outputs``) and detached metrics.

        Args:
            pred: output of ``S2LD.forward(..., supervision=...)`` (``pred.gt`` set).
            batch: the training batch (depth, intrinsics, poses).
            window_radii: half-width in pixels of each refinement level's window.
        """
        raise NotImplementedError
