"""ImageNet-C's noise corruptions of a frame (``uint8 [H, W, 3]``): Gaussian, shot (Poisson) and impulse
(salt-and-pepper) noise, with ImageNet-C's or, for frames of at most 64 px, CIFAR-10-C's parameters
(:func:`uvav.corruptions._visual_common.is_small`).

Libraries: numpy only (all three).
"""

from __future__ import annotations

import numpy as np

from uvav.corruptions import register
from uvav.corruptions._visual_common import REFERENCE, Severities, to_uint8

GAUSSIAN_NOISE = Severities(imagenet=(0.08, 0.12, 0.18, 0.26, 0.38), cifar=(0.04, 0.06, 0.08, 0.09, 0.10))


@register("gaussian_noise", "visual", "noise", order=1, reference=REFERENCE)
def gaussian_noise(image: np.ndarray, severity: int, rng: np.random.RandomState) -> np.ndarray:
    """Add zero-mean Gaussian noise of standard deviation ``c`` (on the [0, 1] scale) to every value."""
    scale = GAUSSIAN_NOISE.pick(image, severity)
    x = image / 255.0
    return to_uint8(np.clip(x + rng.normal(size=x.shape, scale=scale), 0, 1) * 255)


# photons per unit intensity: fewer photons, more noise
SHOT_NOISE = Severities(imagenet=(60, 25, 12, 5, 3), cifar=(500, 250, 100, 75, 50))


@register("shot_noise", "visual", "noise", order=2, reference=REFERENCE)
def shot_noise(image: np.ndarray, severity: int, rng: np.random.RandomState) -> np.ndarray:
    """Replace every value ``x`` (on [0, 1]) by ``Poisson(x * c) / c``."""
    photons = SHOT_NOISE.pick(image, severity)
    x = image / 255.0
    return to_uint8(np.clip(rng.poisson(x * photons) / float(photons), 0, 1) * 255)


# fraction of values set to black or white
IMPULSE_NOISE = Severities(imagenet=(0.03, 0.06, 0.09, 0.17, 0.27), cifar=(0.01, 0.02, 0.03, 0.05, 0.07))


@register("impulse_noise", "visual", "noise", order=3, reference=REFERENCE)
def impulse_noise(image: np.ndarray, severity: int, rng: np.random.RandomState) -> np.ndarray:
    """Salt-and-pepper noise: each value (channels apart) is hit with probability ``c``, then set to 255 or 0 with
    even odds; drawn like ``skimage.util.random_noise(mode='s&p')`` of ImageNet-C's time (scikit-image <= 0.15,
    two ``choice`` draws over the whole image; scikit-image >= 0.19 draws from another generator)."""
    amount = IMPULSE_NOISE.pick(image, severity)
    hit = rng.choice([True, False], size=image.shape, p=[amount, 1 - amount])
    salt = rng.choice([True, False], size=image.shape, p=[0.5, 0.5])
    out = image / 255.0
    out[hit & salt] = 1.0
    out[hit & ~salt] = 0.0
    return to_uint8(out * 255)
