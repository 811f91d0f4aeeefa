"""S2LD backbones: the contract, the name -> class registry, and the ResNet-FPN backbone.

**Contract.** A backbone maps a (B, C, H, W) image in [0, 1] (H, W multiples of 8; C = its
``in_channels``: 1 grayscale, 3 RGB) to :class:`BackboneFeatures`: coarse features at 1/8, fine
features at 1/2 and, where the network has one, a pretrained detection score at full resolution.
It declares ``in_channels``, ``d_coarse``, ``d_fine``, ``has_score``, ``d_descriptor`` (> 0 when
it can describe keypoints with a pretrained descriptor head: :meth:`describe`) and its parameter
groups (``param_groups()``: e.g. ``"fine"``, the layers that make the fine map), so that nothing
outside a backbone names its internals. Backbones are chosen by ``backbone.name``
(:data:`BACKBONES`): ``resnet_fpn`` (below, trained from scratch, the paper's) and ``aliked``
(:mod:`.backbone_aliked`, pretrained ALIKED).

**ResNet-FPN**: coarse features at 1/8 and fine features at 1/2 resolution.

Two top-down heads (``fine_head``):

- ``"fpn"`` (LoFTR's): at 1/4 and 1/2 a 1x1 lateral plus two 3x3 convolutions, the 1/2 ones at
  ``block_dims[1]`` channels.
- ``"light"``: S2LD only reads the fine map in small windows around sparse keypoints, so the
  1/2-resolution path is kept thin: 1x1 laterals into the fine width ``block_dims[0]``, one 3x3
  convolution at 1/4 and one at 1/2 (about a quarter of the ``"fpn"`` head's multiply-adds).

``blocks_per_stage`` sets the residual blocks per stage (1/2, 1/4, 1/8); with ``[1, 2, 2]`` the
full-width 1/2 stage costs half of LoFTR's.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..conf import merge_conf
from ..errors import InputError
from .sampling import PointwiseFeatureMap

FINE_HEADS = ("fpn", "light")

#: Backbone name -> "module:class" (imported on use, so a backbone's dependencies load only when chosen).
BACKBONES: dict[str, str] = {
    "resnet_fpn": "imatch_s2ld.models.backbone:ResNetFPN",
    "aliked": "imatch_s2ld.models.backbone_aliked:AlikedBackbone",
}


@dataclass(frozen=True)
class BackboneFeatures:
    """What a backbone computes for a batch of images of size (H, W).

    coarse (B, d_coarse, H/8, W/8); fine (B, d_fine, H/2, W/2) (a backbone may give it at full
    resolution, (B, d_fine, H, W), possibly as a :class:`~.sampling.PointwiseFeatureMap`: the
    local-dense stage samples it at pixel positions, whatever its stride); score (B, 1, H, W)
    detection probability in (0, 1) or None; extra: backbone-private state for ``describe`` (or None).
    """

    coarse: torch.Tensor
    fine: torch.Tensor | PointwiseFeatureMap
    score: torch.Tensor | None = None
    extra: Any = None

    def chunk(self) -> tuple[BackboneFeatures, BackboneFeatures]:
        """Split a batch of 2B images (both views at once) into the first and second B."""
        def half(x: Any, k: int) -> Any:
            if hasattr(x, "chunk"):  # a tensor or a PointwiseFeatureMap
                return x.chunk(2)[k]
            if isinstance(x, (tuple, list)):
                return type(x)(half(v, k) for v in x)
            return x
        return (BackboneFeatures(*(half(v, 0) for v in (self.coarse, self.fine, self.score, self.extra))),
                BackboneFeatures(*(half(v, 1) for v in (self.coarse, self.fine, self.score, self.extra))))


def backbone_class(name: str) -> type[nn.Module]:
    """The backbone class registered as ``name``.

    Raises:
        InputError: unknown name (lists the known ones).
    """
    if name not in BACKBONES:
        raise InputError(f"backbone.name: unknown backbone {name!r}; known: {', '.join(sorted(BACKBONES))}")
    module, _, attr = BACKBONES[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def backbone_name(conf: dict[str, Any] | None) -> str:
    """``conf["name"]``; configurations written before backbones had names are ``resnet_fpn``."""
    return str((conf or {}).get("name", "resnet_fpn"))


def merge_backbone_conf(base: dict[str, Any] | None, overrides: dict[str, Any] | None) -> dict[str, Any]:
    """Merge backbone configurations strictly against the chosen backbone's ``default_conf``:
    an override that names another backbone starts from that backbone's defaults."""
    overrides = dict(overrides or {})
    base = dict(base or {})
    name = backbone_name(overrides) if "name" in overrides else backbone_name(base)
    defaults = backbone_class(name).default_conf
    if backbone_name(base) != name:
        base = {}
    base.setdefault("name", name)
    return merge_conf(merge_conf(defaults, base, _prefix="backbone."), overrides, _prefix="backbone.")


def build_backbone(conf: dict[str, Any] | None, pretrained: bool = True) -> nn.Module:
    """Build the backbone ``conf["name"]`` (pretrained weights read only when ``pretrained``)."""
    conf = merge_backbone_conf(None, conf)
    cls = backbone_class(conf["name"])
    if conf["name"] == "resnet_fpn":
        return cls(conf)
    return cls(conf, pretrained=pretrained)


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def _conv1x1(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a (projected) residual connection."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = _conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, cin, H, W) -> (B, cout, H/stride, W/stride)."""
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


def _stage(cin: int, cout: int, stride: int, blocks: int) -> nn.Sequential:
    """``blocks`` basic blocks, the first one with ``stride`` (module names ``0``, ``1``, ...)."""
    rest = (BasicBlock(cout, cout, 1) for _ in range(blocks - 1))
    return nn.Sequential(BasicBlock(cin, cout, stride), *rest)


def _up(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


def _check_conf(conf: dict[str, Any]) -> tuple[list[int], list[int], str]:
    """Validated ``block_dims``, ``blocks_per_stage`` and ``fine_head``.

    Raises:
        InputError: wrong lengths, non-positive values or an unknown head.
    """
    dims, blocks, head = list(conf["block_dims"]), list(conf["blocks_per_stage"]), str(conf["fine_head"])
    if len(dims) != 3 or any(int(d) <= 0 for d in dims):
        raise InputError(f"backbone.block_dims: expected 3 positive widths, got {dims}")
    if len(blocks) != 3 or any(int(n) < 1 for n in blocks):
        raise InputError(f"backbone.blocks_per_stage: expected 3 counts >= 1, got {blocks}")
    if head not in FINE_HEADS:
        raise InputError(f"backbone.fine_head: expected one of {', '.join(FINE_HEADS)}, got {head!r}")
    return [int(d) for d in dims], [int(n) for n in blocks], head


class ResNetFPN(nn.Module):
    """Stem + residual stages at 1/2, 1/4, 1/8 and a top-down path to the 1/2 map.

    ``d_coarse = block_dims[2]`` (1/8 map), ``d_fine = block_dims[0]`` (1/2 map). No detection
    score, no pretrained descriptor.
    """

    has_score = False
    d_descriptor = 0

    in_channels = 1  # grayscale
    default_conf: dict[str, Any] = {
        "name": "resnet_fpn", "initial_dim": 128, "block_dims": [128, 196, 256],
        "blocks_per_stage": [2, 2, 2], "fine_head": "fpn",
    }

    def __init__(self, conf: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.conf = conf = merge_conf(self.default_conf, {"name": "resnet_fpn", **(conf or {})})
        (d1, d2, d3), (n1, n2, n3), self.fine_head = _check_conf(conf)
        d0 = int(conf["initial_dim"])
        self.d_fine, self.d_coarse = d1, d3
        self.stem = nn.Sequential(nn.Conv2d(1, d0, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(d0),
                                  nn.ReLU(inplace=True))
        self.layer1 = _stage(d0, d1, 1, n1)  # 1/2
        self.layer2 = _stage(d1, d2, 2, n2)  # 1/4
        self.layer3 = _stage(d2, d3, 2, n3)  # 1/8
        self.out3 = _conv1x1(d3, d3)
        if self.fine_head == "fpn":
            self._build_fpn_head(d1, d2, d3)
        else:
            self._build_light_head(d1, d2, d3)

    def _build_fpn_head(self, d1: int, d2: int, d3: int) -> None:
        self.lat2 = _conv1x1(d2, d3)
        self.smooth2 = nn.Sequential(_conv3x3(d3, d3), nn.BatchNorm2d(d3), nn.LeakyReLU(0.1),
                                     _conv3x3(d3, d2))
        self.lat1 = _conv1x1(d1, d2)
        self.smooth1 = nn.Sequential(_conv3x3(d2, d2), nn.BatchNorm2d(d2), nn.LeakyReLU(0.1),
                                     _conv3x3(d2, d1))

    def _build_light_head(self, d1: int, d2: int, d3: int) -> None:
        self.top2 = _conv1x1(d3, d1)  # applied at 1/8, then upsampled
        self.lat2 = _conv1x1(d2, d1)
        self.smooth2 = nn.Sequential(_conv3x3(d1, d1), nn.BatchNorm2d(d1), nn.LeakyReLU(0.1))
        self.lat1 = _conv1x1(d1, d1)
        self.smooth1 = nn.Sequential(nn.BatchNorm2d(d1), nn.LeakyReLU(0.1), _conv3x3(d1, d1))

    def _top_down(self, x1: torch.Tensor, x2: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        """x1 (B, d1, H/2, W/2), x2 (B, d2, H/4, W/4), coarse (B, d3, H/8, W/8) -> fine (B, d1, H/2, W/2)."""
        if self.fine_head == "fpn":
            y2 = self.smooth2(self.lat2(x2) + _up(coarse))
        else:
            y2 = self.smooth2(self.lat2(x2) + _up(self.top2(coarse)))
        return self.smooth1(self.lat1(x1) + _up(y2))

    def param_groups(self) -> dict[str, list[str]]:
        """Parameter groups (module names relative to the backbone): ``fine`` = the last layers of
        the 1/2 map."""
        return {"fine": ["lat1", "smooth1"]}

    def forward(self, image: torch.Tensor) -> BackboneFeatures:
        """Args:
            image: (B, 1, H, W) grayscale in [0, 1], H and W multiples of 8.
        Returns:
            :class:`BackboneFeatures`: coarse (B, d_coarse, H/8, W/8), fine (B, d_fine, H/2, W/2).
        """
        x1 = self.layer1(self.stem(image))
        x2 = self.layer2(x1)
        x3 = self.layer3(x2)
        coarse = self.out3(x3)
        return BackboneFeatures(coarse=coarse, fine=self._top_down(x1, x2, coarse))
