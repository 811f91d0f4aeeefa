"""S2LD: sparse-to-local-dense matching (Li, Zhao, Xia, IEEE TIP 2023), assembled.

Backbone (1/8 + 1/2 maps) -> keypoint head (one keypoint per selected coarse cell, sub-cell offset)
-> position-adjusted descriptors -> self/cross attention -> dual-softmax sparse matching ->
progressive local dense refinement in fine-feature windows.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..conf import merge_conf
from ..errors import InputError
from ..io import atomic_path, read_torch_file
from ..losses.supervision import KeypointCorrespondences, keypoint_correspondences
from .attention import KeypointTransformer, build_transformer
from .backbone import ResNetFPN, build_backbone, merge_backbone_conf
from .coarse import CoarseMatcher, build_coarse
from .fine import FineLevel, FineMatcher
from .keypoints import (
    COARSE_STRIDE,
    DESCRIPTOR_SOURCES,
    KeypointDescriptor,
    KeypointHead,
    build_keypoints,
    sampled_features,
)
from .s2ld_loss import LossOutput, S2LDLoss, supervision_from_batch
from .sampling import PointwiseFeatureMap

PRECISIONS = ("fp32", "bf16")


def named_configs() -> dict[str, dict[str, Any]]:
    """The named configurations (fresh dicts): ``tiny`` (CPU tests/training), ``base`` (both
    trained from scratch) and ``aliked`` (pretrained ALIKED backbone, detector and descriptors, the
    sparse stage started from LightGlue's ALIKED weights and held fixed; the local-dense stage and the
    fine adapter train)."""
    return {
        "aliked": {
            "backbone": {"name": "aliked", "model": "aliked-n16", "fine_dim": 32, "fine_stride": 1},
            "d_model": 256,
            "keypoints": {"source": "detector", "max_keypoints": 2048, "nms_radius": 2,
                          "detection_threshold": 0.2},
            "descriptor": {"source": "pretrained"},
            # LightGlue's point pruning (its heads: 8 x 514 parameters); its exit heads (1 MB) do not
            # fit the 25 MB budget of the shipped checkpoint
            "attention": {"mode": "lightglue", "n_layers": 9, "n_heads": 4, "init": "aliked_lightglue",
                          "pruning": True, "width_confidence": 0.99},
            "coarse": {"mode": "lightglue", "threshold": 0.1},
            # detector keypoints are accurate to about a pixel: a +-4 px then a +-2 px window
            "fine": {"window_sizes": [5, 5], "spacings": [2.0, 1.0], "n_heads": 2},
            "freeze": ["backbone.net", "descriptor", "transformer", "coarse"],
        },
        "tiny": {
            "backbone": {"initial_dim": 32, "block_dims": [32, 48, 64]},
            "d_model": 64,
            "keypoints": {"max_keypoints": 384},
            "attention": {"n_layers": 2, "n_heads": 4, "mode": "linear"},
            "fine": {"n_heads": 2},
        },
        "base": {
            "backbone": {"initial_dim": 128, "block_dims": [128, 196, 256], "blocks_per_stage": [1, 2, 2],
                         "fine_head": "light"},
            "d_model": 256,
            "keypoints": {"max_keypoints": 1024},
            "attention": {"n_layers": 4, "n_heads": 8, "mode": "linear"},
            "fine": {"n_heads": 4},
        },
    }


@dataclass(frozen=True)
class S2LDOutput:
    """Outputs of :meth:`S2LD.forward`. Pixels are (x, y) in the input images (pixel centres).

    Keypoints (N0/N1 = min(max_keypoints, cells), static per batch):
        kpts0 (B, N0, 2), kpts1 (B, N1, 2) float pixels; kpts_logits0 (B, N0), kpts_logits1 (B, N1)
        detection logits; kpts_valid0 (B, N0), kpts_valid1 (B, N1) bool (False: padded cell).
    Sparse matching:
        scores (B, N0, N1) dual-softmax probabilities (0 for invalid pairs).
        matches_b, matches_i, matches_j (M,) long: predicted mutual-NN matches, then the
        ``extra_matches``; matches_conf (M,) = scores[b, i, j]; matches_extra (M,) bool marks
        the appended ones.
    Local dense matching:
        fine_levels: tuple of :class:`FineLevel` (expectation (M, 2) pixels of image 1, std (M,)
        pixels), one per refinement level.
    Final:
        mkpts0 (M, 2) = kpts0[b, i]; mkpts1 (M, 2) = last level expectation; mconf (M,);
        muncertainty (M,) = last level std (pixels).
    Training only (``forward(..., supervision=...)``):
        gt: :class:`KeypointCorrespondences` of the detected keypoints (its pairs are the
        ``extra_matches``); None otherwise.
    """

    kpts0: torch.Tensor
    kpts1: torch.Tensor
    kpts_logits0: torch.Tensor
    kpts_logits1: torch.Tensor
    kpts_valid0: torch.Tensor
    kpts_valid1: torch.Tensor
    scores: torch.Tensor
    matches_b: torch.Tensor
    matches_i: torch.Tensor
    matches_j: torch.Tensor
    matches_conf: torch.Tensor
    matches_extra: torch.Tensor
    fine_levels: tuple[FineLevel, ...]
    mkpts0: torch.Tensor
    mkpts1: torch.Tensor
    mconf: torch.Tensor
    muncertainty: torch.Tensor
    gt: KeypointCorrespondences | None = None


@dataclass(frozen=True)
class ImageEncoding:
    """One image's half of S2LD (:meth:`S2LD.encode`): fine map (B, C, H/f, W/f), keypoints
    (``kp.kpts`` (B, N, 2) pixels (x, y), ``kp.valid`` (B, N), ``kp.logits`` (B, N)), descriptors
    (B, N, d_model) and their positional encoding, image size (H, W)."""

    fine: torch.Tensor | PointwiseFeatureMap
    kp: Any
    desc: torch.Tensor
    pe: Any
    size: tuple[int, int]


def _check_image(name: str, image: torch.Tensor) -> None:
    if image.ndim != 4 or image.shape[1] not in (1, 3):
        raise InputError(f"{name}: expected (B, 1, H, W) grayscale or (B, 3, H, W) RGB, "
                         f"got {tuple(image.shape)}")
    h, w = image.shape[-2:]
    if h % COARSE_STRIDE or w % COARSE_STRIDE or h == 0 or w == 0:
        raise InputError(f"{name}: H and W must be positive multiples of {COARSE_STRIDE}, got {h}x{w}")


def _check_mask(name: str, mask: torch.Tensor | None, image: torch.Tensor) -> None:
    if mask is None:
        return
    b, _, h, w = image.shape
    expected = (b, h // COARSE_STRIDE, w // COARSE_STRIDE)
    if tuple(mask.shape) != expected:
        raise InputError(f"{name}: expected a {expected} bool mask of valid coarse cells, "
                         f"got {tuple(mask.shape)}")


class S2LD(nn.Module):
    """The S2LD matcher network. Build with :meth:`from_config` or :meth:`from_checkpoint`.

    Also a :class:`imatch_s2ld.matchers.Matcher` (``match(image0, image1)`` on numpy images).
    """

    name = "s2ld"

    default_conf: dict[str, Any] = {
        "backbone": ResNetFPN.default_conf,  # any backbone: backbone.name (models.backbone.BACKBONES)
        "d_model": 256,
        "keypoints": KeypointHead.default_conf,
        "descriptor": {"source": "learned"},  # learned | pretrained (the backbone's descriptor head)
        "attention": KeypointTransformer.default_conf,
        "coarse": CoarseMatcher.default_conf,
        "fine": FineMatcher.default_conf,
        "loss": S2LDLoss.default_conf,
        "freeze": [],  # module prefixes held fixed in training (no gradient, eval mode: frozen BN statistics)
        # < 1: the sparse stage (detection, descriptors, attention, sparse matches) runs on the images
        # resized by this factor, the local-dense stage on the full-resolution fine map (faster; the
        # backbone needs a fine_map method)
        "sparse_scale": 1.0,
        # fp32 | bf16: in eval mode the attention runs under bfloat16 autocast (about twice as fast on CPUs
        # with AVX512-BF16 or AMX and on GPUs; slower on CPUs without them)
        "precision": "fp32",
    }

    def __init__(self, conf: dict[str, Any] | None = None, pretrained: bool = True) -> None:
        """Args:
            conf: overrides of :attr:`default_conf` (strict; the backbone's keys are its own).
            pretrained: read pretrained weights the configuration names (backbone, ``attention.init``);
                False when a checkpoint will provide every weight (:meth:`from_checkpoint`).
        """
        super().__init__()
        self.conf = conf = merge_model_conf(self.default_conf, conf)
        d_model = int(conf["d_model"])
        self.backbone = build_backbone(conf["backbone"], pretrained=pretrained)
        d_coarse, d_fine = self.backbone.d_coarse, self.backbone.d_fine
        self.keypoints = build_keypoints(d_coarse, self.backbone.has_score, conf["keypoints"])
        source = conf["descriptor"]["source"]
        if source not in DESCRIPTOR_SOURCES:
            raise InputError(f"descriptor.source: expected one of {', '.join(DESCRIPTOR_SOURCES)}, "
                             f"got {source!r}")
        if source == "pretrained" and not self.backbone.d_descriptor:
            raise InputError("descriptor.source=pretrained needs a backbone with a descriptor head "
                             "(e.g. aliked)")
        d_raw = self.backbone.d_descriptor if source == "pretrained" else d_coarse + d_fine
        lightglue = conf["attention"]["mode"] == "lightglue"
        self.descriptor = KeypointDescriptor(d_raw, d_model, "rotary" if lightglue else "additive",
                                             int(conf["attention"]["n_heads"]))
        self.transformer = build_transformer(d_model, conf["attention"])
        self.coarse = build_coarse(d_model, conf["coarse"], int(conf["attention"]["n_layers"]),
                                   bool(conf["attention"]["exits"]))
        self.fine = FineMatcher(d_fine, d_model, conf["fine"])
        self.loss_fn = S2LDLoss(conf["loss"])
        if pretrained and conf["attention"]["init"] is not None:
            init_from_lightglue(self, str(conf["attention"]["init"]))
        scale = conf["sparse_scale"]
        if isinstance(scale, bool) or not isinstance(scale, int | float) or not 0.0 < scale <= 1.0:
            raise InputError(f"sparse_scale: expected a number in (0, 1], got {scale!r}")
        if scale != 1.0 and not hasattr(self.backbone, "fine_map"):
            raise InputError(f"sparse_scale={scale}: backbone {conf['backbone']['name']!r} has no separate "
                             "fine map (use backbone.name=aliked)")
        if conf["precision"] not in PRECISIONS:
            raise InputError(f"precision: expected one of {', '.join(PRECISIONS)}, got {conf['precision']!r}")
        self._frozen = self._resolve_prefixes(conf["freeze"], "freeze")
        for name, p in self.named_parameters():
            if any(_under(name, f) for f in self._frozen):
                p.requires_grad_(False)

    def _resolve_prefixes(self, prefixes: list[str], key: str) -> list[str]:
        modules = dict(self.named_modules())
        unknown = [p for p in prefixes if p not in modules]
        if unknown:
            raise InputError(f"{key}: unknown module(s) {unknown}; top-level modules: "
                             f"{', '.join(n for n, _ in self.named_children())}")
        return list(prefixes)

    @property
    def in_channels(self) -> int:
        """What the backbone reads: 1 (grayscale) or 3 (RGB); :meth:`forward` converts either input."""
        return int(self.backbone.in_channels)

    @property
    def grayscale(self) -> bool:
        """Matcher interface: True when only intensities are used (evaluators may decode to gray)."""
        return self.in_channels == 1

    def _backbone_image(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 1 or 3, H, W) -> (B, in_channels, H, W): RGB to gray (kornia, OpenCV's BT.601
        weights), or gray replicated."""
        if image.shape[1] == self.in_channels:
            return image
        if self.in_channels == 1:
            from kornia.color import rgb_to_grayscale

            return rgb_to_grayscale(image)
        return image.expand(-1, 3, -1, -1)

    def parameter_groups(self) -> dict[str, list[str]]:
        """Named groups of module prefixes, for choosing what trains: every top-level module by its
        name and the backbone's own groups as ``backbone:<group>`` (e.g. ``backbone:fine``, the layers
        that make the fine map), so that callers never name a backbone's internals. ``keypoints``:
        what the keypoint positions depend on (the learned head, or the backbone's score layers)."""
        groups = {name: [name] for name, _ in self.named_children() if name != "loss_fn"}
        for group, names in self.backbone.param_groups().items():
            groups[f"backbone:{group}"] = [f"backbone.{n}" for n in names]
        if self.conf["keypoints"]["source"] == "detector":  # keypoints move with the backbone's score
            groups["keypoints"] = groups["backbone:score"]
        return groups

    def train(self, mode: bool = True) -> S2LD:
        """Train mode, except the frozen modules (``freeze``), which stay in eval mode."""
        super().train(mode)
        modules = dict(self.named_modules())
        for prefix in self._frozen:
            modules[prefix].eval()
        return self

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, config: str | dict[str, Any] = "tiny", **overrides: Any) -> S2LD:
        """``S2LD.from_config("tiny" | "base" | {...}, attention={"mode": "sdpa"}, ...)``.

        Raises:
            InputError: unknown config name or unknown configuration key.
        """
        if isinstance(config, str):
            configs = named_configs()
            if config not in configs:
                raise InputError(f"unknown S2LD config {config!r}; known: {', '.join(sorted(configs))}")
            config = configs[config]
        conf = merge_model_conf(merge_model_conf(cls.default_conf, config), overrides)
        return cls(conf)

    def save_checkpoint(self, path: str | os.PathLike[str], extra: dict[str, Any] | None = None,
                        half_frozen: bool = False) -> Path:
        """Write ``{"conf", "state_dict", **extra}`` atomically (temp file + ``os.replace``).

        ``extra`` should hold plain Python values / tensors (the checkpoint is read with
        ``weights_only=True``). ``half_frozen`` stores the floating-point weights of the ``freeze``
        modules (pretrained, never trained here) in float16, halving their size (the shipped
        default: 49 -> 25 MB), except the backbone's ``full_precision`` group; :meth:`from_checkpoint`
        loads them back into float32.
        """
        path = Path(path)
        extra = dict(extra or {})
        clash = {"conf", "state_dict"} & set(extra)
        if clash:
            raise InputError(f"save_checkpoint: extra may not contain {sorted(clash)}")
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        if half_frozen:
            keep = self.parameter_groups().get("backbone:full_precision", [])
            state = {k: v.half() if v.is_floating_point() and any(_under(k, f) for f in self._frozen)
                     and not any(_under(k, f) for f in keep) else v for k, v in state.items()}
        with atomic_path(path) as tmp:
            torch.save({"conf": merge_conf(self.conf), "state_dict": state, **extra}, tmp)
        return path

    @classmethod
    def read_checkpoint(cls, path: str | os.PathLike[str], map_location: str | torch.device = "cpu",
                        overrides: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], S2LD]:
        """The checkpoint's contents and a model built from its conf plus ``overrides``, weights not
        loaded (:meth:`from_checkpoint` loads them).

        Raises:
            InputError: missing or unreadable file, not an S2LD checkpoint, or a bad conf (names the path).
        """
        path = Path(path)
        ckpt = read_torch_file(path, "S2LD checkpoint", map_location)
        if not isinstance(ckpt, dict) or not isinstance(ckpt.get("conf"), dict) \
                or not isinstance(ckpt.get("state_dict"), dict):
            raise InputError(f"{path}: not an S2LD checkpoint (needs 'conf' and 'state_dict')")
        try:
            stored = merge_model_conf(cls.default_conf, ckpt["conf"])  # keys newer than the checkpoint
            return ckpt, cls(merge_model_conf(stored, overrides), pretrained=False)
        except InputError as err:
            raise InputError(f"{path}: {err}") from None

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike[str], map_location: str | torch.device = "cpu",
                        **overrides: Any) -> S2LD:
        """Rebuild the model from the conf stored in the checkpoint (plus optional conf overrides,
        e.g. ``coarse={"threshold": 0.1}``), load the weights and return it in eval mode.

        Raises:
            InputError: missing, unreadable or incompatible checkpoint (names the path).
        """
        path = Path(path)
        ckpt, model = cls.read_checkpoint(path, map_location, overrides)
        try:
            model.load_state_dict(ckpt["state_dict"], strict=True)
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0]
            raise InputError(f"{path}: weights do not fit the stored conf ({first})") from None
        return model.to(map_location).eval()

    # ------------------------------------------------------------------ network
    def forward(self, image0: torch.Tensor, image1: torch.Tensor, mask0: torch.Tensor | None = None,
                mask1: torch.Tensor | None = None,
                extra_matches: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
                supervision: Mapping[str, torch.Tensor] | None = None) -> S2LDOutput:
        """Args:
            image0, image1: (B, 1, H, W) grayscale or (B, 3, H, W) RGB in [0, 1] (converted to
                :attr:`in_channels`), H and W multiples of 8 (the two images may have different sizes).
            mask0, mask1: optional (B, H/8, W/8) bool, True for valid (not padded) coarse cells.
            extra_matches: optional (b, i, j) long tensors (E,) appended to the predicted matches
                (e.g. ground-truth coarse matches during training).
            supervision: training only: depth0/depth1 (B, H, W) at the images' resolution (0 =
                unknown), K0/K1 (B, 3, 3), T_0to1/T_1to0 (B, 4, 4). The ground-truth pairs of the
                detected keypoints are computed after detection and appended as extra matches;
                ``out.gt`` holds them.
        Returns:
            :class:`S2LDOutput`.
        """
        _check_image("image0", image0)
        _check_image("image1", image1)
        _check_mask("mask0", mask0, image0)
        _check_mask("mask1", mask1, image1)
        image0, image1 = self._backbone_image(image0), self._backbone_image(image1)
        small0, smask0 = self._sparse_input(image0, mask0)
        small1, smask1 = self._sparse_input(image1, mask1)
        if small0.shape == small1.shape:  # one backbone pass (BatchNorm in training sees both)
            feats0, feats1 = self.backbone(torch.cat([small0, small1])).chunk()
        else:
            feats0, feats1 = self.backbone(small0), self.backbone(small1)
        enc0 = self._encode_features(feats0, image0, small0, smask0)
        enc1 = self._encode_features(feats1, image1, small1, smask1)
        return self.match_encoded(enc0, enc1, extra_matches, supervision)

    def encode(self, image: torch.Tensor, mask: torch.Tensor | None = None) -> ImageEncoding:
        """The per-image half of :meth:`forward`: backbone, keypoints, descriptors.

        In eval mode an image's encoding does not depend on its partner, so a window of N frames
        can be encoded once and its pairs matched with :meth:`match_encoded` (what fine-tuning does);
        gradients flow through the encodings into every pair that uses them.

        Args:
            image: (B, 1, H, W) grayscale or (B, 3, H, W) RGB in [0, 1], H and W multiples of 8.
            mask: optional (B, H/8, W/8) bool, True for valid coarse cells.
        """
        _check_image("image", image)
        _check_mask("mask", mask, image)
        image = self._backbone_image(image)
        small, small_mask = self._sparse_input(image, mask)
        return self._encode_features(self.backbone(small), image, small, small_mask)

    def _sparse_input(self, image: torch.Tensor, mask: torch.Tensor | None
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The image (and coarse-cell mask) the sparse stage sees: ``image`` itself, or at
        ``sparse_scale`` < 1 the image resized (area average) to that scale, rounded to multiples
        of 8 (a cell counts as valid where every full-resolution cell it covers is valid)."""
        scale = float(self.conf["sparse_scale"])
        if scale == 1.0:
            return image, mask
        h, w = image.shape[-2:]
        hs, ws = (max(COARSE_STRIDE, round(n * scale / COARSE_STRIDE) * COARSE_STRIDE) for n in (h, w))
        small = F.interpolate(image, size=(hs, ws), mode="area")
        if mask is not None:
            mask = -F.adaptive_max_pool2d(-mask[:, None].float(), (hs // COARSE_STRIDE, ws // COARSE_STRIDE))
            mask = mask[:, 0] > 0.5
        return small, mask

    def _encode_features(self, feats: Any, image: torch.Tensor, small: torch.Tensor,
                         small_mask: torch.Tensor | None) -> ImageEncoding:
        """Keypoints and descriptors from the sparse stage's features ``feats`` of ``small`` (the
        image itself or its :meth:`_sparse_input`), keypoints and fine map at the image's size."""
        size, small_size = tuple(image.shape[-2:]), tuple(small.shape[-2:])
        kp = self._keypoints(feats, small_size, small_mask)
        desc, pe = self.descriptor(self._raw_descriptors(feats, kp.kpts, small_size), kp.kpts, small_size)
        if small_size == size:
            return ImageEncoding(feats.fine, kp, desc, pe, size)
        # pixel centres of the small image in the full one (conventions: resizing)
        scale = kp.kpts.new_tensor([size[1] / small_size[1], size[0] / small_size[0]])
        kp = replace(kp, kpts=(kp.kpts + 0.5) * scale - 0.5)
        return ImageEncoding(self.backbone.fine_map(image), kp, desc, pe, size)

    def match_encoded(self, enc0: ImageEncoding, enc1: ImageEncoding,
                      extra_matches: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
                      supervision: Mapping[str, torch.Tensor] | None = None) -> S2LDOutput:
        """The pair half of :meth:`forward` (attention, sparse and local-dense matching) on two
        :meth:`encode` results of the same batch size; arguments and result as :meth:`forward`."""
        if enc0.desc.shape[0] != enc1.desc.shape[0]:
            raise InputError(f"match_encoded: batch sizes differ ({enc0.desc.shape[0]} vs "
                             f"{enc1.desc.shape[0]})")
        fine0, fine1, kp0, kp1, size0, size1 = enc0.fine, enc1.fine, enc0.kp, enc1.kp, enc0.size, enc1.size
        desc0, desc1, pe0, pe1 = enc0.desc, enc1.desc, enc0.pe, enc1.pe
        if self.conf["precision"] == "bf16" and not self.transformer.training:
            with torch.autocast(desc0.device.type, dtype=torch.bfloat16):
                tr = self.transformer(desc0, desc1, pe0, pe1, kp0.valid, kp1.valid)
            tr = tr._replace(desc0=tr.desc0.float(), desc1=tr.desc1.float())
        else:  # (an autocast around the whole forward, e.g. bf16 training, still applies)
            tr = self.transformer(desc0, desc1, pe0, pe1, kp0.valid, kp1.valid)
        desc0, desc1 = tr.desc0, tr.desc1
        cm = self.coarse(desc0, desc1, tr.kept0, tr.kept1, tr.depth)  # pruned keypoints are not matched

        gt = None
        if supervision is not None:
            sup = supervision
            gt = keypoint_correspondences(
                kp0.kpts, kp1.kpts, sup["depth0"], sup["depth1"], sup["T_0to1"], sup["T_1to0"], sup["K0"],
                sup["K1"], self.loss_fn.conf["gt_radius_px"], kp0.valid, kp1.valid,
                self.loss_fn.conf["depth_tolerance"])
            if extra_matches is not None:
                raise InputError("forward: pass either extra_matches or supervision, not both")
            extra_matches = gt.matrix.nonzero(as_tuple=True)
        mb, mi, mj, mconf = cm.b, cm.i, cm.j, cm.conf
        extra = torch.zeros_like(mb, dtype=torch.bool)
        if extra_matches is not None:
            eb, ei, ej = (t.to(device=mb.device, dtype=torch.long).reshape(-1) for t in extra_matches)
            if not eb.shape == ei.shape == ej.shape:
                raise InputError("extra_matches: b, i, j must have the same length")
            mb, mi, mj = torch.cat([mb, eb]), torch.cat([mi, ei]), torch.cat([mj, ej])
            mconf = torch.cat([mconf, cm.scores[eb, ei, ej]])
            extra = torch.cat([extra, torch.ones_like(eb, dtype=torch.bool)])

        pts0, pts1 = kp0.kpts[mb, mi], kp1.kpts[mb, mj]
        levels = self.fine(fine0, fine1, pts0, pts1, mb, desc0[mb, mi], desc1[mb, mj], size0, size1)
        final = levels[-1] if levels else FineLevel(pts1.float(), pts1.new_zeros(pts1.shape[0]).float())
        return S2LDOutput(
            kpts0=kp0.kpts, kpts1=kp1.kpts, kpts_logits0=kp0.logits, kpts_logits1=kp1.logits,
            kpts_valid0=kp0.valid, kpts_valid1=kp1.valid, scores=cm.scores,
            matches_b=mb, matches_i=mi, matches_j=mj, matches_conf=mconf, matches_extra=extra,
            fine_levels=levels, mkpts0=pts0, mkpts1=final.expectation, mconf=mconf,
            muncertainty=final.std, gt=gt,
        )

    def _keypoints(self, feats: Any, size: tuple[int, int], mask: torch.Tensor | None) -> Any:
        if self.conf["keypoints"]["source"] == "detector":
            return self.keypoints(feats.score, size, mask)
        return self.keypoints(feats.coarse, size, mask)

    def _raw_descriptors(self, feats: Any, kpts: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if self.conf["descriptor"]["source"] == "pretrained":
            return self.backbone.describe(feats, kpts, size)
        return sampled_features(feats.coarse, feats.fine, kpts, size)

    # ------------------------------------------------------------------ training
    @staticmethod
    def batch_inputs(batch: Mapping[str, Any]) -> dict[str, Any]:
        """Keyword arguments of :meth:`forward` for a training batch (collated
        :class:`imatch_s2ld.data.megadepth_train.MegaDepthPairDataset` items): images, coarse
        masks and the supervision tensors."""
        inputs: dict[str, Any] = {"image0": batch["image0"], "image1": batch["image1"]}
        for key in ("mask0", "mask1"):
            if key in batch:
                inputs[key] = batch[key]
        inputs["supervision"] = supervision_from_batch(batch)
        return inputs

    def loss(self, pred: S2LDOutput, batch: Mapping[str, Any]) -> LossOutput:
        """The supervised loss (see :mod:`imatch_s2ld.models.s2ld_loss`) of ``pred`` =
        ``self(**self.batch_inputs(batch))``: ``.total`` (0-d float32) and ``.terms`` (detached)."""
        radii = tuple((lvl.size - 1) / 2 * lvl.spacing for lvl in self.fine.levels)
        return self.loss_fn(pred, batch, radii)

    # ------------------------------------------------------------------ matcher interface
    def _prepare(self, image: np.ndarray, name: str) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        from ..data.images import to_grayscale

        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
            raise InputError(f"{name}: expected a uint8 (H, W) or (H, W, 3) image, got "
                             f"{image.dtype} {image.shape}")
        h, w = image.shape[:2]
        if h == 0 or w == 0:
            raise InputError(f"{name}: empty image")
        if self.in_channels == 1:
            pixels = torch.from_numpy(to_grayscale(image))[None, None]
        else:
            rgb = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
            pixels = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None]
        ph, pw = -(-h // COARSE_STRIDE) * COARSE_STRIDE, -(-w // COARSE_STRIDE) * COARSE_STRIDE
        device = next(self.parameters()).device
        # replicate the border into the padding (a zero band would be an edge that does not exist)
        tensor = F.pad(pixels.float() / 255.0, (0, pw - w, 0, ph - h), mode="replicate")
        tensor = tensor.to(device)
        mask = torch.zeros(1, ph // COARSE_STRIDE, pw // COARSE_STRIDE, dtype=torch.bool, device=device)
        mask[:, : -(-h // COARSE_STRIDE), : -(-w // COARSE_STRIDE)] = True  # cells with any real pixel
        return tensor, mask, (h, w)

    def match(self, image0: np.ndarray, image1: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Match two uint8 images (gray or RGB, any size): kpts0 (N, 2), kpts1 (N, 2), confidence (N,),
        float32, in input-image pixels. Images are padded to multiples of 8 (padding masked)."""
        t0, m0, (h0, w0) = self._prepare(image0, "image0")
        t1, m1, (h1, w1) = self._prepare(image1, "image1")
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                out = self(t0, t1, m0, m1)
        finally:
            self.train(was_training)
        k0, k1, conf = out.mkpts0.float(), out.mkpts1.float(), out.mconf.float()
        inside = ((k0[:, 0] >= -0.5) & (k0[:, 0] <= w0 - 0.5) & (k0[:, 1] >= -0.5) & (k0[:, 1] <= h0 - 0.5)
                  & (k1[:, 0] >= -0.5) & (k1[:, 0] <= w1 - 0.5) & (k1[:, 1] >= -0.5) & (k1[:, 1] <= h1 - 0.5))
        return (k0[inside].cpu().numpy().astype(np.float32).reshape(-1, 2),
                k1[inside].cpu().numpy().astype(np.float32).reshape(-1, 2),
                conf[inside].cpu().numpy().astype(np.float32).reshape(-1))


def merge_model_conf(base: Mapping[str, Any], overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """:func:`merge_conf` for S2LD configurations: strict everywhere, the ``backbone`` section
    against the chosen backbone's own defaults (``backbone.name``)."""
    overrides = dict(overrides or {})
    backbone = overrides.pop("backbone", None)
    merged = merge_conf(base, overrides)
    merged["backbone"] = merge_backbone_conf(dict(base.get("backbone") or {}), backbone)
    return merged


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def init_from_lightglue(model: S2LD, weights: str) -> list[str]:
    """Start the sparse stage from LightGlue's weights (``aliked_lightglue`` / ``disk_lightglue``):
    the input projection and rotary encoding into ``descriptor``, the first ``n_layers`` layers
    into ``transformer`` and the assignment head of the last of them into ``coarse``; with
    ``attention.exits`` / ``pruning`` also the earlier layers' token confidences, assignment heads
    (exits) and matchability heads (pruning).

    Returns:
        the names of the weights set.
    Raises:
        InputError: the configuration cannot hold LightGlue's weights (mode, widths, layer count).
    """
    from .. import pretrained as weights_mod

    conf = model.conf
    if conf["attention"]["mode"] != "lightglue" or conf["coarse"]["mode"] != "lightglue":
        raise InputError("attention.init needs attention.mode=lightglue and coarse.mode=lightglue")
    state = weights_mod.load_state_dict(weights)
    n = int(conf["attention"]["n_layers"])
    available = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("transformers."))
    if n > available:
        raise InputError(f"attention.n_layers={n}: {weights} has {available} layers")
    exits = bool(conf["attention"]["exits"])
    pruning = bool(conf["attention"]["pruning"])
    mapped = {"descriptor.rotary.Wr.weight": state["posenc.Wr.weight"]}
    for k, v in state.items():
        parts = k.split(".")
        if k.startswith("input_proj."):
            mapped["descriptor.proj." + k[len("input_proj."):]] = v
        elif parts[0] == "transformers" and int(parts[1]) < n:
            mapped["transformer.layers." + ".".join(parts[1:])] = v
        elif parts[0] == "log_assignment" and int(parts[1]) == n - 1:
            mapped["coarse.assign." + ".".join(parts[2:])] = v
        elif exits and parts[0] == "log_assignment" and int(parts[1]) < n - 1:
            mapped["coarse.exits." + ".".join(parts[1:])] = v
        elif (exits or pruning) and parts[0] == "token_confidence" and int(parts[1]) < n - 1:
            mapped[f"transformer.confidence.{parts[1]}.0.{parts[-1]}"] = v
        elif pruning and parts[0] == "log_assignment" and parts[2] == "matchability" \
                and int(parts[1]) < n - 1:
            mapped[f"transformer.matchability.{parts[1]}.{parts[-1]}"] = v
    own = model.state_dict()
    bad = [k for k, v in mapped.items() if k not in own or own[k].shape != v.shape]
    if bad:
        raise InputError(f"attention.init={weights}: weights do not fit this configuration ({bad[:3]})")
    model.load_state_dict(mapped, strict=False)
    return list(mapped)


#: The shipped default checkpoint (``--matcher s2ld``): see docs/s2ld_default.md for how it was trained.
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "weights" / "s2ld_default.pt"


def s2ld_matcher(arg: str | None = None, device: str = "cpu", **conf: Any) -> S2LD:
    """Matcher factory: ``"s2ld"`` loads the shipped :data:`DEFAULT_CHECKPOINT`, ``"s2ld:PATH"``
    another checkpoint (:meth:`S2LD.from_checkpoint`, plus conf overrides).

    Raises:
        InputError: the checkpoint is missing/unreadable (names the path).
    """
    path = DEFAULT_CHECKPOINT if arg is None else Path(arg)
    if arg is None and not path.is_file():
        raise InputError(f"{path}: the default S2LD checkpoint is not installed; "
                         "use --matcher s2ld:PATH/TO/CHECKPOINT.pt")
    return S2LD.from_checkpoint(path, map_location=device, **conf)
