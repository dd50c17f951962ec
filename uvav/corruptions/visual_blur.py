"""ImageNet-C's blur corruptions of a frame (``uint8 [H, W, 3]``): defocus, glass, motion and zoom blur, with
ImageNet-C's or, for frames of at most 64 px, CIFAR-10-C's parameters
(:func:`uvav.corruptions._visual_common.is_small`).

Libraries: defocus_blur OpenCV (``cv2.GaussianBlur``, ``cv2.filter2D``); glass_blur scipy (Gaussian filter) and numpy;
motion_blur numpy; zoom_blur scipy (``ndimage.zoom``).
"""

from __future__ import annotations

import cv2
import numpy as np

from uvav.corruptions import register
from uvav.corruptions._visual_common import (
    REFERENCE,
    Severities,
    clipped_zoom,
    directional_blur,
    gaussian,
    is_small,
    to_uint8,
    trim,
)


def _disk(radius: float, alias_blur: float) -> np.ndarray:
    """ImageNet-C's defocus kernel: a normalised disk of ``radius`` on a grid of at least 17 x 17, anti-aliased by a
    small Gaussian (3 x 3, or 5 x 5 above radius 8)."""
    half, ksize = (8, (3, 3)) if radius <= 8 else (radius, (5, 5))
    grid = np.arange(-half, half + 1)
    x, y = np.meshgrid(grid, grid)
    disk = np.array(x**2 + y**2 <= radius**2, dtype=np.float32)
    disk /= np.sum(disk)
    return cv2.GaussianBlur(disk, ksize=ksize, sigmaX=alias_blur)


# (disk radius, anti-aliasing sigma)
DEFOCUS_BLUR = Severities(imagenet=((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),
                          cifar=((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)))


@register("defocus_blur", "visual", "blur", order=4, reference=REFERENCE)
def defocus_blur(image: np.ndarray, severity: int, rng: np.random.RandomState) -> np.ndarray:
    """Correlate each channel with an anti-aliased disk (an out-of-focus lens); edges reflected (OpenCV's default)."""
    radius, alias_blur = DEFOCUS_BLUR.pick(image, severity)
    kernel = _disk(radius, alias_blur)
    x = image / 255.0
    out = np.stack([cv2.filter2D(x[:, :, channel], -1, kernel) for channel in range(x.shape[2])], axis=-1)
    return to_uint8(np.clip(out, 0, 1) * 255)


def _local_shuffle(x: np.ndarray, max_delta: int, rng: np.random.RandomState) -> np.ndarray:
    """ImageNet-C's pixel "swap", with its exact semantics: pixels are visited from the bottom-right to the top-left
    (rows ``H - d .. d + 1``, columns ``W - d .. d + 1``), each draws ``(dx, dy)`` in ``[-d, d)`` and takes the value
    its source ``(h + dy, w + dx)`` holds at that moment (the original's tuple swap of numpy views copies one way
    only). Vectorised: a pixel whose source was visited earlier takes what the source took, which pointer jumping
    resolves in O(log chain) steps; the result equals the sequential loop."""
    height, width = x.shape[:2]
    rows = np.arange(height - max_delta, max_delta, -1)
    cols = np.arange(width - max_delta, max_delta, -1)
    if rows.size == 0 or cols.size == 0:
        return x
    offsets = rng.randint(-max_delta, max_delta, size=(rows.size * cols.size, 2))  # (dx, dy) per pixel, in order
    h = np.repeat(rows, cols.size)
    w = np.tile(cols, rows.size)
    src_h, src_w = h + offsets[:, 1], w + offsets[:, 0]
    target = h * width + w
    source = src_h * width + src_w
    # the source was visited before its pixel: inside the visited block and below it, or to its right on its row
    visited = (src_h >= rows[-1]) & (src_h <= rows[0]) & (src_w >= cols[-1]) & (src_w <= cols[0])
    earlier = visited & ((src_h > h) | ((src_h == h) & (src_w > w)))
    step = np.arange(height * width)  # pixel -> the visit index of that pixel (for visited pixels)
    step[target] = np.arange(target.size)
    # follow links to the first source that still held its original value when read
    origin = source.copy()
    link = np.where(earlier, step[source], -1)  # visit index of the pixel whose result is copied, or -1
    while (pending := link >= 0).any():
        ahead = link[pending]
        origin[pending] = origin[ahead]
        link[pending] = link[ahead]
    flat = x.reshape(height * width, -1)
    out = flat.copy()
    out[target] = flat[origin]
    return out.reshape(x.shape)


# (Gaussian sigma, largest displacement d, rounds of shuffling)
GLASS_BLUR = Severities(imagenet=((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)),
                        cifar=((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)))


@register("glass_blur", "visual", "blur", order=5, reference=REFERENCE)
def glass_blur(image: np.ndarray, severity: int, rng: np.random.RandomState) -> np.ndarray:
    """Frosted glass: Gaussian blur, shuffle pixels locally (``rounds`` times), Gaussian blur again."""
    sigma, max_delta, rounds = GLASS_BLUR.pick(image, severity)
    x = to_uint8(gaussian(image / 255.0, sigma, channels=True) * 255)
    for _ in range(rounds):
        x = _local_shuffle(x, max_delta, rng)
    return to_uint8(np.clip(gaussian(x / 255.0, sigma, channels=True), 0, 1) * 255)


# (radius, sigma) of the motion kernel
MOTION_BLUR = Severities(imagenet=((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
                         cifar=((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)))


@register("motion_blur", "visual", "blur", order=6, reference=REFERENCE)
def motion_blur(image: np.ndarray, severity: int, rng: np.random.RandomState) -> np.ndarray:
    """Streak the frame along a random angle in [-45, 45) degrees (imagecorruptions' numpy motion blur; ImageNet-C
    and CIFAR-10-C used ImageMagick's, which takes the same radius and sigma)."""
    radius, sigma = MOTION_BLUR.pick(image, severity)
    angle = rng.uniform(-45, 45)
    return to_uint8(directional_blur(image, radius, sigma, angle))


# np.arange(start, stop, step) of zoom factors
ZOOM_BLUR = Severities(imagenet=((1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.02), (1, 1.26, 0.02), (1, 1.31, 0.03)),
                       cifar=((1, 1.06, 0.01), (1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.01), (1, 1.26, 0.01)))


@register("zoom_blur", "visual", "blur", order=7, reference=REFERENCE)
def zoom_blur(image: np.ndarray, severity: int, rng: np.random.RandomState) -> np.ndarray:
    """Average the frame with its centre zoomed in by each factor of the range (a camera moving forward)."""
    factors = np.arange(*ZOOM_BLUR.pick(image, severity))
    x = (image / 255.0).astype(np.float32)
    out = np.zeros_like(x)
    for factor in factors:
        out += trim(clipped_zoom(x, factor), *x.shape[:2], centred=is_small(image))
    return to_uint8(np.clip((x + out) / (len(factors) + 1), 0, 1) * 255)
