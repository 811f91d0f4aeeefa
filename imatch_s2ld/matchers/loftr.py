"""LoFTR (kornia implementation) with user-provided weights; nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data.images import to_grayscale
from ..errors import InputError
from ..io import read_torch_file
from .base import MatchOutput, as_float32_matches


def load_loftr_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a LoFTR state dict: a plain state dict or a Lightning checkpoint (``state_dict``,
    keys prefixed ``matcher.``).

    Raises:
        InputError: missing or unreadable file (names it).
    """
    ckpt = read_torch_file(path, "LoFTR weights", missing_hint=" (--matcher loftr:PATH)")
    if isinstance(ckpt, dict) and isinstance(ckpt.get("state_dict"), dict):
        ckpt = ckpt["state_dict"]
    if not isinstance(ckpt, dict):
        raise InputError(f"{path}: not a state dict")
    prefix = "matcher."
    if all(k.startswith(prefix) for k in ckpt):
        ckpt = {k[len(prefix):]: v for k, v in ckpt.items()}
    return ckpt


class LoFTRMatcher:
    """``kornia.feature.LoFTR`` on grayscale images in [0, 1] (any size; no resizing here)."""

    name = "loftr"
    grayscale = True

    def __init__(self, weights: str | Path, device: str = "cpu") -> None:
        from kornia.feature import LoFTR

        self.weights = Path(weights)
        state = load_loftr_state_dict(self.weights)
        self.device = torch.device(device)
        self.net = LoFTR(pretrained=None)
        try:
            self.net.load_state_dict(state, strict=True)
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0]
            raise InputError(f"{self.weights}: not a LoFTR state dict ({first})") from None
        self.net.eval().to(self.device)

    def _tensor(self, image: np.ndarray) -> torch.Tensor:
        gray = to_grayscale(image).astype(np.float32) / 255.0
        return torch.from_numpy(gray)[None, None].to(self.device)

    @torch.inference_mode()
    def match(self, image0: np.ndarray, image1: np.ndarray) -> MatchOutput:
        """Match two uint8 images (gray or RGB): (N, 2), (N, 2), (N,) float32."""
        out = self.net({"image0": self._tensor(image0), "image1": self._tensor(image1)})
        return as_float32_matches(
            out["keypoints0"].cpu().numpy(), out["keypoints1"].cpu().numpy(),
            out["confidence"].cpu().numpy(),
        )


def loftr_matcher(arg: str | None = None, weights: str | None = None, device: str = "cpu"):
    """Factory for ``"loftr:WEIGHTS"`` (or ``weights=``)."""
    path = arg or weights
    if path is None:
        raise InputError("--matcher: loftr needs weights: use loftr:PATH/TO/WEIGHTS.ckpt")
    return LoFTRMatcher(path, device=device)
