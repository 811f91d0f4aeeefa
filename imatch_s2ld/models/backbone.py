"""ResNet-FPN backbone: coarse features at 1/8 and fine features at 1/2 resolution."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..conf import merge_conf


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


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
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


def _stage(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1))


def _up(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


class ResNetFPN(nn.Module):
    """Stem + residual stages at 1/2, 1/4, 1/8 and a top-down FPN path.

    ``d_coarse = block_dims[2]`` (1/8 map), ``d_fine = block_dims[0]`` (1/2 map).
    """

    default_conf: dict[str, Any] = {"initial_dim": 128, "block_dims": [128, 196, 256]}

    def __init__(self, conf: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.conf = conf = merge_conf(self.default_conf, conf)
        d0 = int(conf["initial_dim"])
        d1, d2, d3 = (int(d) for d in conf["block_dims"])
        self.d_fine, self.d_coarse = d1, d3
        self.stem = nn.Sequential(nn.Conv2d(1, d0, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(d0),
                                  nn.ReLU(inplace=True))
        self.layer1 = _stage(d0, d1, 1)  # 1/2
        self.layer2 = _stage(d1, d2, 2)  # 1/4
        self.layer3 = _stage(d2, d3, 2)  # 1/8
        self.out3 = nn.Conv2d(d3, d3, 1, bias=False)
        self.lat2 = nn.Conv2d(d2, d3, 1, bias=False)
        self.smooth2 = nn.Sequential(_conv3x3(d3, d3), nn.BatchNorm2d(d3), nn.LeakyReLU(0.1),
                                     _conv3x3(d3, d2))
        self.lat1 = nn.Conv2d(d1, d2, 1, bias=False)
        self.smooth1 = nn.Sequential(_conv3x3(d2, d2), nn.BatchNorm2d(d2), nn.LeakyReLU(0.1),
                                     _conv3x3(d2, d1))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Args:
            image: (B, 1, H, W) grayscale in [0, 1], H and W multiples of 8.
        Returns:
            coarse (B, d_coarse, H/8, W/8) and fine (B, d_fine, H/2, W/2) features.
        """
        x1 = self.layer1(self.stem(image))
        x2 = self.layer2(x1)
        x3 = self.layer3(x2)
        coarse = self.out3(x3)
        y2 = self.smooth2(self.lat2(x2) + _up(coarse))
        fine = self.smooth1(self.lat1(x1) + _up(y2))
        return coarse, fine
