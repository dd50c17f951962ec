"""ImageNet-C's weather corruptions of a frame (``uint8 [H, W, 3]``): snow, frost and fog, with ImageNet-C's or, for
frames of at most 64 px, CIFAR-10-C's parameters (:func:`uvav.corruptions._visual_common.is_small`).

Libraries: snow scipy (``ndimage.zoom``), numpy and OpenCV (``cv2.cvtColor``); frost OpenCV (``cv2.imdecode``,
``cv2.resize``) and the frost photographs of the ``imagecorruptions`` package; fog numpy.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np

from uvav.corruptions import register
from uvav.corruptions._visual_common import (
    REFERENCE,
    Severities,
    clipped_zoom,
    directional_blur,
    is_small,
    to_uint8,
    trim,
)

# (snow mean, snow std, zoom, threshold, blur radius, blur sigma, weight kept of the frame)
SNOW = Severities(
    imagenet=((0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7), (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
              (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65), (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)),
    cifar=((0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
           (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)))


@register("snow", "visual", "weather", order=8, reference=REFERENCE)
def snow(image: np.ndarray, severity: int, rng: np.random.RandomState) -> np.ndarray:
    """Falling snow: Gaussian noise, zoomed into flakes and thresholded, streaked by a motion blur at an angle in
    [-135, -45) degrees, added twice (once turned by 180 degrees) to a frame brightened towards its grey level.
    Small frames follow CIFAR-10-C: the layer is cut about its centre and cast to ``uint8`` before the streaks."""
    mean, std, zoom, threshold, radius, sigma, kept = SNOW.pick(image, severity)
    height, width = image.shape[:2]
    x = np.array(image, dtype=np.float32) / 255.0
    layer = clipped_zoom(rng.normal(size=(height, width), loc=mean, scale=std)[..., np.newaxis], zoom)
    if is_small(image):
        layer = trim(layer, height, width, centred=True)
    layer[layer < threshold] = 0
    layer = np.clip(layer[..., 0], 0, 1)
    if is_small(image):
        layer = (layer * 255).astype(np.uint8) / 255.0  # CIFAR-10-C blurred a uint8 PNG
    layer = directional_blur(layer, radius, sigma, rng.uniform(-135, -45))
    layer = trim(np.round(layer * 255).astype(np.uint8) / 255.0, height, width)[..., np.newaxis]
    grey = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)[..., np.newaxis]
    x = kept * x + (1 - kept) * np.maximum(x, grey * 1.5 + 0.5)
    return to_uint8(np.clip(x + layer + np.rot90(layer, k=2), 0, 1) * 255)


FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")  # ImageNet-C never draws frost6
FROST_NEEDS = "the frost photographs of the imagecorruptions package (pip install imagecorruptions --no-deps)"


def _frost_photo(index: int) -> np.ndarray:
    """Frost photograph ``index`` (BGR ``uint8``, as ``cv2.imread`` gives it) from the installed ``imagecorruptions``
    package's ``frost/`` folder. The package is located, not imported: importing it fails on current setuptools (it
    imports ``pkg_resources``), so ``importlib.resources.files`` cannot be used."""
    spec = importlib.util.find_spec("imagecorruptions")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"corruption frost needs {FROST_NEEDS}")
    data = (Path(next(iter(spec.submodule_search_locations))) / "frost" / FROST_FILES[index]).read_bytes()
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


# (weight of the frame, weight of the frost)
FROST = Severities(imagenet=((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)),
                   cifar=((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)))


@register("frost", "visual", "weather", order=9, needs=FROST_NEEDS, reference=REFERENCE)
def frost(image: np.ndarray, severity: int, rng: np.random.RandomState) -> np.ndarray:
    """Blend the frame with a random crop of one of five frost photographs. Large frames: the photograph is scaled
    (bicubic) to cover the frame, times 1.1 (imagecorruptions); small frames: scaled (bilinear) by 0.2 per 32 px of
    the larger side (CIFAR-10-C: 0.2 at 32 px)."""
    kept, added = FROST.pick(image, severity)
    height, width = image.shape[:2]
    photo = _frost_photo(rng.randint(5))
    if is_small(image):
        scale = 0.2 * (max(height, width) / 32)
        photo = cv2.resize(photo, (0, 0), fx=scale, fy=scale)
    else:
        scale = max(1, height / photo.shape[0], width / photo.shape[1]) * 1.1
        size = (int(np.ceil(photo.shape[1] * scale)), int(np.ceil(photo.shape[0] * scale)))
        photo = cv2.resize(photo, dsize=size, interpolation=cv2.INTER_CUBIC)
    top, left = rng.randint(0, photo.shape[0] - height), rng.randint(0, photo.shape[1] - width)
    photo = photo[top:top + height, left:left + width][..., ::-1]  # BGR -> RGB
    return to_uint8(kept * np.asarray(image) + added * photo)


def _plasma_fractal(size: int, decay: float, rng: np.random.RandomState) -> np.ndarray:
    """A ``size`` x ``size`` (a power of two) cloud height map in [0, 1] by the diamond-square algorithm, the random
    amplitude divided by ``decay`` at each halving of the grid step (ImageNet-C's ``plasma_fractal``)."""
    grid = np.empty((size, size), dtype=np.float64)
    grid[0, 0] = 0
    step, wobble = size, 100.0

    def perturbed(total: np.ndarray) -> np.ndarray:  # the mean of four neighbours, plus noise
        return total / 4 + wobble * rng.uniform(-wobble, wobble, total.shape)

    while step >= 2:
        half = step // 2
        corners = grid[0:size:step, 0:size:step]  # squares: centre from the four corners
        total = corners + np.roll(corners, shift=-1, axis=0)
        total += np.roll(total, shift=-1, axis=1)
        grid[half:size:step, half:size:step] = perturbed(total)
        centres = grid[half:size:step, half:size:step]  # diamonds: edge midpoints from two centres, two corners
        corners = grid[0:size:step, 0:size:step]
        grid[0:size:step, half:size:step] = perturbed(
            (centres + np.roll(centres, 1, axis=0)) + (corners + np.roll(corners, -1, axis=1)))
        grid[half:size:step, 0:size:step] = perturbed(
            (centres + np.roll(centres, 1, axis=1)) + (corners + np.roll(corners, -1, axis=0)))
        step //= 2
        wobble /= decay
    grid -= grid.min()
    return grid / grid.max()


# (fog strength, decay of the fractal's roughness)
FOG = Severities(imagenet=((1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)),
                 cifar=((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)))


@register("fog", "visual", "weather", order=10, reference=REFERENCE)
def fog(image: np.ndarray, severity: int, rng: np.random.RandomState) -> np.ndarray:
    """Add a plasma-fractal cloud (on a square grid of the next power of two of the larger side) and rescale so the
    frame's brightest value is kept."""
    strength, decay = FOG.pick(image, severity)
    height, width = image.shape[:2]
    size = 1 << (max(height, width) - 1).bit_length()
    x = image / 255.0
    peak = x.max()
    x += strength * _plasma_fractal(size, decay, rng)[:height, :width][..., np.newaxis]
    return to_uint8(np.clip(x * peak / (peak + strength), 0, 1) * 255)
