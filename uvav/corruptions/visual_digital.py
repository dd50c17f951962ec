"""ImageNet-C's digital corruptions of a frame (``uint8 [H, W, 3]``): brightness, contrast, elastic transform,
pixelation and JPEG compression, with ImageNet-C's or, for frames of at most 64 px, CIFAR-10-C's parameters
(:func:`uvav.corruptions._visual_common.is_small`).

Libraries: brightness and contrast numpy; elastic_transform scipy (Gaussian filter, ``ndimage.map_coordinates``) and,
for small frames, OpenCV (``cv2.getAffineTransform``, ``cv2.warpAffine``); pixelate and jpeg_compression Pillow.
"""

from __future__ import annotations

from io import BytesIO

import cv2
import numpy as np
from PIL import Image
from scipy import ndimage

from uvav.corruptions import register
from uvav.corruptions._visual_common import REFERENCE, Severities, gaussian, is_small, to_uint8


def _rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """HSV of a float RGB image in [0, 1], with ``skimage.color.rgb2hsv``'s arithmetic (hue from the largest
    channel, blue before green before red on ties; hue and saturation 0 for greys)."""
    value = rgb.max(-1)
    spread = np.ptp(rgb, axis=-1)
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    with np.errstate(invalid="ignore", divide="ignore"):
        saturation = np.where(spread == 0, 0.0, spread / value)
        sextant = np.where(blue == value, 4.0 + (red - green) / spread,
                           np.where(green == value, 2.0 + (blue - red) / spread, (green - blue) / spread))
    hue = np.where(spread == 0, 0.0, (sextant / 6.0) % 1.0)
    return np.stack([hue, saturation, value], axis=-1)


def _hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """RGB of an HSV image, with ``skimage.color.hsv2rgb``'s arithmetic."""
    hue, saturation, value = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    sector = np.floor(hue * 6)
    frac = hue * 6 - sector
    low = value * (1 - saturation)
    falling = value * (1 - frac * saturation)
    rising = value * (1 - (1 - frac) * saturation)
    choices = [(value, rising, low), (falling, value, low), (low, value, rising), (low, falling, value),
               (rising, low, value), (value, low, falling)]
    sector = sector.astype(np.uint8) % 6
    return np.stack([np.choose(sector, [c[channel] for c in choices]) for channel in range(3)], axis=-1)


# added to the HSV value
BRIGHTNESS = Severities(imagenet=(0.1, 0.2, 0.3, 0.4, 0.5), cifar=(0.05, 0.1, 0.15, 0.2, 0.3))


@register("brightness", "visual", "digital", order=11, reference=REFERENCE)
def brightness(image: np.ndarray, severity: int, rng: np.random.RandomState) -> np.ndarray:
    """Add ``c`` to the HSV value (clipped to [0, 1]), hue and saturation unchanged."""
    shift = BRIGHTNESS.pick(image, severity)
    hsv = _rgb_to_hsv(image / 255.0)
    hsv[..., 2] = np.clip(hsv[..., 2] + shift, 0, 1)
    return to_uint8(np.clip(_hsv_to_rgb(hsv), 0, 1) * 255)


# factor on each channel's deviation from its mean
CONTRAST = Severities(imagenet=(0.4, 0.3, 0.2, 0.1, 0.05), cifar=(0.75, 0.5, 0.4, 0.3, 0.15))


@register("contrast", "visual", "digital", order=12, reference=REFERENCE)
def contrast(image: np.ndarray, severity: int, rng: np.random.RandomState) -> np.ndarray:
    """Scale each channel's deviation from its mean by ``c``."""
    factor = CONTRAST.pick(image, severity)
    x = image / 255.0
    means = np.mean(x, axis=(0, 1), keepdims=True)
    return to_uint8(np.clip((x - means) * factor + means, 0, 1) * 255)


def _remap(x: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Sample ``x`` ``[H, W, C]`` at ``(row + dy, column + dx)`` (bilinear, reflected edges), every channel alike."""
    rows, cols, channels = np.meshgrid(np.arange(x.shape[0]), np.arange(x.shape[1]), np.arange(x.shape[2]),
                                       indexing="ij")
    coordinates = np.stack([rows + dy[..., np.newaxis], cols + dx[..., np.newaxis], channels])
    return ndimage.map_coordinates(x, coordinates, order=1, mode="reflect")


def _random_affine(x: np.ndarray, spread: float, rng: np.random.RandomState) -> np.ndarray:
    """CIFAR-10-C's random affine warp: three points about the centre, each moved by up to ``spread`` px (points in
    (row, column) order handed to OpenCV as (x, y), as the original does); edges reflected."""
    size = np.float32(x.shape[:2])
    centre, half = size // 2, min(x.shape[:2]) // 3
    points = np.float32([centre + half, [centre[0] + half, centre[1] - half], centre - half])
    moved = points + rng.uniform(-spread, spread, size=points.shape).astype(np.float32)
    matrix = cv2.getAffineTransform(points, moved)
    return cv2.warpAffine(x, matrix, x.shape[1::-1], borderMode=cv2.BORDER_REFLECT_101)


# ImageNet-C (imagecorruptions): displacement scale alpha; the field's sigma is 1 % of each side, its amplitude
# 0.5 % of the height
ELASTIC_TRANSFORM = Severities(
    imagenet=(250 * 0.05, 250 * 0.065, 250 * 0.085, 250 * 0.1, 250 * 0.12),
    # CIFAR-10-C: (alpha, sigma, affine spread) as fractions of the side (32 px there; here the larger side)
    cifar=((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)))


@register("elastic_transform", "visual", "digital", order=13, reference=REFERENCE)
def elastic_transform(image: np.ndarray, severity: int, rng: np.random.RandomState) -> np.ndarray:
    """Displace every pixel by a smooth random field (uniform noise, Gaussian-filtered, scaled) and resample
    bilinearly. Large frames: imagecorruptions' size-relative field; small frames: CIFAR-10-C's, after its random
    affine warp."""
    x = np.array(image, dtype=np.float32) / 255.0
    shape = x.shape[:2]
    if is_small(image):
        side = max(shape)  # CIFAR-10-C's IMSIZE
        alpha, sigma, spread = (side * f for f in ELASTIC_TRANSFORM.pick(image, severity))
        x = _random_affine(x, spread, rng)
        amplitude = 1.0
    else:
        alpha = ELASTIC_TRANSFORM.pick(image, severity)
        sigma = np.array(shape) * 0.01
        amplitude = shape[0] * 0.005
    dx, dy = (
        (gaussian(rng.uniform(-amplitude, amplitude, size=shape), sigma, mode="reflect", truncate=3) * alpha)
        .astype(np.float32) for _ in range(2))
    return to_uint8(np.clip(_remap(x, dx, dy), 0, 1) * 255)


# fraction of the side kept before scaling back
PIXELATE = Severities(imagenet=(0.6, 0.5, 0.4, 0.3, 0.25), cifar=(0.95, 0.9, 0.85, 0.75, 0.65))


@register("pixelate", "visual", "digital", order=14, reference=REFERENCE)
def pixelate(image: np.ndarray, severity: int, rng: np.random.RandomState) -> np.ndarray:
    """Shrink by ``c`` with box filtering, then scale back: nearest-neighbour (imagecorruptions) or, for small
    frames, box (CIFAR-10-C)."""
    kept = PIXELATE.pick(image, severity)
    height, width = image.shape[:2]
    small = Image.fromarray(image).resize((int(width * kept), int(height * kept)), Image.Resampling.BOX)
    back = Image.Resampling.BOX if is_small(image) else Image.Resampling.NEAREST
    return np.array(small.resize((width, height), back))


# JPEG quality
JPEG_COMPRESSION = Severities(imagenet=(25, 18, 15, 10, 7), cifar=(80, 65, 58, 50, 40))


@register("jpeg_compression", "visual", "digital", order=15, reference=REFERENCE)
def jpeg_compression(image: np.ndarray, severity: int, rng: np.random.RandomState) -> np.ndarray:
    """Encode as JPEG at quality ``c`` with Pillow and decode."""
    quality = JPEG_COMPRESSION.pick(image, severity)
    buffer = BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality)
    return np.array(Image.open(buffer).convert("RGB"))
