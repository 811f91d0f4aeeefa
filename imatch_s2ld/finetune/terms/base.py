"""What a fine-tuning loss term is: :class:`LossTerm`, and the data it sees (:class:`Window`, :class:`Pair`).

A term is one small object. :class:`~imatch_s2ld.finetune.loss.FinetuneLoss` matches every pair of a
window with gradient and hands each pair to every active term (:meth:`LossTerm.add_pair`), then asks each
term for its loss and metrics (:meth:`LossTerm.finish`); the total is the weighted sum. A term declares
its options (``default_conf``, merged flat into ``model.loss``, with its weight ``<name>_weight``), the
metrics it logs, and whether it needs S2LD's tracks from a no-gradient matching pass before the step
(:meth:`LossTerm.needs_tracks`). Adding a term = one file in this package plus its line in
:data:`imatch_s2ld.finetune.terms.TERMS` (docs/extending.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor

from ...errors import InputError
from ..targets import WindowTargets

__all__ = ["LossTerm", "Pair", "Window"]


@dataclass(frozen=True)
class Window:
    """The window a step trains on.

    Attributes:
        images: ``(N, C, H, W)`` frames in [0, 1]; K: ``(N, 3, 3)`` intrinsics; targets: the fixed BA
            targets (poses ``targets.T_cw``). All on the images' device.
        image_size: ``(W, H)``; long_side: ``max(W, H)`` (residuals are divided by it).
    """

    images: Tensor
    K: Tensor
    targets: WindowTargets
    image_size: tuple[int, int]
    long_side: float


@dataclass(frozen=True)
class Pair:
    """One pair ``(a, b)`` of the window matched with gradient.

    Attributes:
        out: the :class:`~imatch_s2ld.models.s2ld.S2LDOutput` of the pair (one batch element).
        tracked: ``(M,)`` bool, the matches appended from the targets' tracks (``out.matches_extra``);
            i, j: ``(T,)`` their keypoint indices in frames a and b (``T = tracked.sum()``).
        predicted: ``(M,)`` bool, the network's own matches kept by ``triangulation_gate_px``.
        T_ab: ``(4, 4)`` BA relative pose a -> b; Ka, Kb: ``(3, 3)``.
    """

    a: int
    b: int
    out: Any
    tracked: Tensor
    i: Tensor
    j: Tensor
    predicted: Tensor
    T_ab: Tensor
    Ka: Tensor
    Kb: Tensor


class LossTerm:
    """Base class of a fine-tuning loss term (see the module docstring).

    Class attributes: ``name`` (the weight is ``<name>_weight``), ``default_conf`` (its options with
    their defaults, weight included), ``metrics`` (the detached values :meth:`finish` returns besides the
    loss), ``always`` (computed for the logs even at weight 0).
    """

    name: ClassVar[str]
    default_conf: ClassVar[dict[str, Any]]
    metrics: ClassVar[tuple[str, ...]] = ()
    always: ClassVar[bool] = False

    def __init__(self, conf: Mapping[str, Any]) -> None:
        """``conf``: the whole merged ``model.loss`` configuration (terms may share options)."""
        self.conf = conf
        self.check()

    @property
    def weight(self) -> float:
        return float(self.conf[f"{self.name}_weight"])

    @property
    def active(self) -> bool:
        """Whether a step computes the term."""
        return self.always or self.weight > 0

    def needs_tracks(self) -> bool:
        """Whether the term needs S2LD's tracks from a no-gradient matching pass before the step."""
        return False

    def check(self) -> None:
        """Validate the term's options.

        Raises:
            InputError: one line naming the option (``model.loss.<key>``).
        """
        if not self.weight >= 0:  # merge_conf has checked that it is a number
            raise InputError(f"model.loss.{self.name}_weight: expected a number >= 0, got "
                             f"{self.conf[f'{self.name}_weight']!r}")

    def choice(self, key: str, choices: tuple[str, ...]) -> None:
        """Raise a one-line :class:`InputError` unless option ``key`` is one of ``choices``."""
        if self.conf[key] not in choices:
            raise InputError(f"model.loss.{key}: expected one of {', '.join(choices)}, "
                             f"got {self.conf[key]!r}")

    def start(self, window: Window) -> None:
        """Reset the per-window state before the first pair."""

    def add_pair(self, window: Window, pair: Pair) -> None:
        """Accumulate what the term needs from one pair."""

    def finish(self, window: Window) -> tuple[Tensor, dict[str, Tensor]]:
        """The term's loss (0-d, with gradient; zero when nothing contributed) and its metrics
        (detached, the keys of ``metrics``)."""
        raise NotImplementedError
