"""Photometric (never geometric) augmentation of training images.

Every operation changes pixel values only, so depth, intrinsics and poses stay exact. Images are
augmented independently (call :func:`photometric_augment` once per image). The result is a
deterministic function of the image, the config and the random generator passed in
(``numpy.random.Generator``, ``numpy.random.RandomState`` or ``torch.Generator``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import Tensor

from ..conf import reject_unknown
from ..errors import InputError

Rng = np.random.Generator | np.random.RandomState | torch.Generator


@dataclass(frozen=True)
class PhotometricAugmentConfig:
    """Photometric augmentation knobs (intensities are in ``[0, 1]`` units).

    Each operation runs with its own probability, in this order: brightness, contrast, gamma,
    blur, noise; the result is clipped to the valid range.

    Attributes:
        brightness: additive offset drawn from ``U(-brightness, brightness)``.
        contrast: gain around the image mean drawn from ``U(1 - contrast, 1 + contrast)``.
        gamma: ``(low, high)``: ``x ** g`` with ``log g`` uniform in ``[log low, log high]``.
        blur_sigma: ``(low, high)`` Gaussian blur sigma in pixels.
        noise_std: ``(low, high)`` standard deviation of additive Gaussian noise.
        p_brightness, p_contrast, p_gamma, p_blur, p_noise: probability of each operation.
    """

    brightness: float = 0.2
    contrast: float = 0.3
    gamma: tuple[float, float] = (0.7, 1.4)
    blur_sigma: tuple[float, float] = (0.3, 1.5)
    noise_std: tuple[float, float] = (0.0, 0.03)
    p_brightness: float = 0.5
    p_contrast: float = 0.5
    p_gamma: float = 0.5
    p_blur: float = 0.2
    p_noise: float = 0.3

    def __post_init__(self) -> None:
        for name in ("p_brightness", "p_contrast", "p_gamma", "p_blur", "p_noise"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                value = getattr(self, name)
                raise InputError(f"augment.{name}: expected a probability in [0, 1], got {value!r}")
        if not 0.0 <= self.brightness <= 1.0:
            raise InputError(f"augment.brightness: expected a value in [0, 1], got {self.brightness!r}")
        if not 0.0 <= self.contrast < 1.0:
            raise InputError(f"augment.contrast: expected a value in [0, 1), got {self.contrast!r}")
        for name, lo_min in (("gamma", 1e-6), ("blur_sigma", 0.0), ("noise_std", 0.0)):
            pair = getattr(self, name)
            if len(pair) != 2 or not (lo_min <= pair[0] <= pair[1]):
                raise InputError(
                    f"augment.{name}: expected (low, high) with {lo_min} <= low <= high, got {pair!r}"
                )

    @classmethod
    def from_dict(cls, values: Mapping[str, object]) -> PhotometricAugmentConfig:
        """Strict construction from a mapping (unknown keys raise :class:`InputError`)."""
        reject_unknown(values, (f.name for f in dataclasses.fields(cls)), "augment")
        fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return cls(**fixed)  # type: ignore[arg-type]


class _Draw:
    """Uniform/normal draws from any of the supported generators."""

    def __init__(self, rng: Rng) -> None:
        if not isinstance(rng, (np.random.Generator, np.random.RandomState, torch.Generator)):
            raise TypeError(f"rng must be a numpy Generator/RandomState or torch.Generator, got {type(rng)}")
        self.rng = rng

    def uniform(self, low: float = 0.0, high: float = 1.0) -> float:
        if isinstance(self.rng, torch.Generator):
            u = float(torch.rand((), generator=self.rng, dtype=torch.float64))
            return low + (high - low) * u
        return float(self.rng.uniform(low, high))

    def normal(self, shape: tuple[int, ...], std: float) -> np.ndarray:
        if isinstance(self.rng, torch.Generator):
            return (torch.randn(shape, generator=self.rng, dtype=torch.float32) * std).numpy()
        return (self.rng.standard_normal(shape) * std).astype(np.float32)


def _augment_float(image: np.ndarray, conf: PhotometricAugmentConfig, draw: _Draw) -> np.ndarray:
    """(H, W[, C]) float32 in [0, 1] -> augmented copy, same shape, clipped to [0, 1]."""
    x = image.astype(np.float32, copy=True)
    if draw.uniform() < conf.p_brightness:
        x = x + np.float32(draw.uniform(-conf.brightness, conf.brightness))
    if draw.uniform() < conf.p_contrast:
        gain = np.float32(draw.uniform(1.0 - conf.contrast, 1.0 + conf.contrast))
        mean = np.float32(x.mean())
        x = (x - mean) * gain + mean
    x = np.clip(x, 0.0, 1.0)
    if draw.uniform() < conf.p_gamma:
        g = float(np.exp(draw.uniform(np.log(conf.gamma[0]), np.log(conf.gamma[1]))))
        x = np.power(x, np.float32(g))
    if draw.uniform() < conf.p_blur:
        sigma = draw.uniform(*conf.blur_sigma)
        if sigma > 0:
            blurred = cv2.GaussianBlur(
                x, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101
            )
            x = blurred.reshape(x.shape)  # OpenCV drops a trailing channel axis of size 1
    if draw.uniform() < conf.p_noise:
        std = draw.uniform(*conf.noise_std)
        x = x + draw.normal(x.shape, std)
    return np.clip(x, 0.0, 1.0).astype(np.float32)


def photometric_augment(
    image: np.ndarray | Tensor, conf: PhotometricAugmentConfig, rng: Rng
) -> np.ndarray | Tensor:
    """Augment one image photometrically; shape, dtype, container type and value range are kept.

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` numpy array, or ``(H, W)`` / ``(C, H, W)`` tensor;
            uint8 in ``[0, 255]`` or floating point in ``[0, 1]``.
        conf: augmentation config.
        rng: numpy ``Generator`` / ``RandomState`` or ``torch.Generator``; the output is a
            deterministic function of ``(image, conf, rng state)``.
    Returns:
        The augmented image (a new array/tensor).
    """
    draw = _Draw(rng)
    if isinstance(image, Tensor):
        arr = image.detach().cpu().numpy()
        channels_first = arr.ndim == 3
        if channels_first:
            arr = np.ascontiguousarray(arr.transpose(1, 2, 0))
        out = photometric_augment(arr, conf, rng)
        assert isinstance(out, np.ndarray)
        if channels_first:
            out = out.transpose(2, 0, 1)
        return torch.from_numpy(np.ascontiguousarray(out)).to(device=image.device)
    if image.ndim not in (2, 3):
        raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {image.shape}")
    if image.dtype == np.uint8:
        out = _augment_float(image.astype(np.float32) / 255.0, conf, draw)
        return np.round(out * 255.0).astype(np.uint8)
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"expected a uint8 or floating-point image, got dtype {image.dtype}")
    return _augment_float(image, conf, draw).astype(image.dtype)
