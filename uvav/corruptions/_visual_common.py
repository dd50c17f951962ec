"""What the frame corruptions share: the size rule that picks a parameter table, the cast back to ``uint8``, and the
zoom, Gaussian and motion-blur steps that ImageNet-C's code defines once for several corruptions.

The size rule: a frame whose larger side is at most :data:`SMALL_SIDE` (64) px takes CIFAR-10-C's parameters
(hendrycks/robustness, ``ImageNet-C/create_c/make_cifar_c.py``, published for 32 px), a larger one ImageNet-C's (the
``imagecorruptions`` 1.1.2 package, published for 224 px and scaled by that package to other sizes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
from scipy import ndimage

SMALL_SIDE = 64
REFERENCE = ("ImageNet-C (Hendrycks & Dietterich, ICLR 2019) as imagecorruptions 1.1.2 computes it, CIFAR-10-C's "
             "make_cifar_c.py table for <= 64 px; tests/corruptions/test_visual.py: equal to imagecorruptions.corrupt")
P = TypeVar("P")


def is_small(image: np.ndarray) -> bool:
    """The one size rule: True (CIFAR-10-C's table) when the frame's larger side is at most 64 px, else False
    (ImageNet-C's table)."""
    return max(image.shape[:2]) <= SMALL_SIDE


@dataclass(frozen=True)
class Severities(Generic[P]):
    """A corruption's published parameters at severities 1-5: ImageNet-C's (224 px) and CIFAR-10-C's (32 px)."""

    imagenet: Sequence[P]
    cifar: Sequence[P]

    def pick(self, image: np.ndarray, severity: int) -> P:
        """The parameter for ``image`` (by :func:`is_small`) at ``severity`` (1-5)."""
        return (self.cifar if is_small(image) else self.imagenet)[severity - 1]


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Clip to [0, 255] and truncate to ``uint8``, as ``np.uint8(...)`` in ImageNet-C's code does (no rounding)."""
    return np.clip(x, 0, 255).astype(np.uint8)


def gaussian(x: np.ndarray, sigma: float | Sequence[float], channels: bool = False, mode: str = "nearest",
             truncate: float = 4.0) -> np.ndarray:
    """``skimage.filters.gaussian`` of a float image, as ImageNet-C calls it: a scipy Gaussian filter, not across the
    last (channel) axis when ``channels``."""
    sigmas = [sigma] * (x.ndim - 1) + [0] if channels else sigma
    return ndimage.gaussian_filter(x, sigmas, mode=mode, truncate=truncate)


def clipped_zoom(image: np.ndarray, factor: float) -> np.ndarray:
    """Zoom into the centre of ``image`` ``[H, W, C]`` by ``factor`` (bilinear, ``scipy.ndimage.zoom``): crop
    ``ceil(side / factor)`` px about the centre and zoom it; the result is at least ``[H, W]`` (see :func:`trim`)."""
    height, width = image.shape[:2]
    crop_h, crop_w = math.ceil(height / float(factor)), math.ceil(width / float(factor))
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    return ndimage.zoom(image[top:top + crop_h, left:left + crop_w], (factor, factor, 1), order=1)


def trim(image: np.ndarray, height: int, width: int, centred: bool = False) -> np.ndarray:
    """Cut ``image`` to ``[height, width]`` from its top-left corner (imagecorruptions) or about its centre
    (``centred``: CIFAR-10-C's clipped zoom)."""
    top, left = ((image.shape[0] - height) // 2, (image.shape[1] - width) // 2) if centred else (0, 0)
    return image[top:top + height, left:left + width]


def directional_blur(image: np.ndarray, radius: int, sigma: float, angle: float) -> np.ndarray:
    """imagecorruptions' numpy stand-in for ImageMagick's motion blur: a one-sided Gaussian-weighted sum of
    ``2 * radius + 1`` copies of ``image`` shifted along ``angle`` (degrees), borders repeated; float64 out."""
    taps = 2 * radius + 1
    weights = np.exp(-np.arange(taps) ** 2 / (2 * sigma**2)) / (np.sqrt(2 * np.pi) * sigma)
    weights = weights / np.sum(weights)
    reach_y, reach_x = taps * np.sin(np.deg2rad(angle)), taps * np.cos(np.deg2rad(angle))
    length = math.hypot(reach_y, reach_x)
    height, width = image.shape[:2]
    padded = np.pad(image, [(taps, taps), (taps, taps)] + [(0, 0)] * (image.ndim - 2), mode="edge")
    blurred: np.ndarray = np.zeros(image.shape, dtype=np.float32)
    for i in range(taps):
        dy = -math.ceil(i * reach_y / length - 0.5)
        dx = -math.ceil(i * reach_x / length - 0.5)
        if abs(dy) >= height or abs(dx) >= width:
            break  # the streak left the frame
        shifted = padded[taps - dy:taps - dy + height, taps - dx:taps - dx + width]  # image moved by (dy, dx)
        blurred = blurred + weights[i] * shifted
    return blurred
