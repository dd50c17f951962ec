"""ImageNet-C's 15 frame corruptions: equal to the ``imagecorruptions`` 1.1.2 package (run under a compatibility shim)
on frames larger than 64 px, CIFAR-10-C's published parameters on smaller ones, deterministic under their rng."""

from __future__ import annotations

import importlib.util
import io
import sys
import types
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from uvav.corruptions import CORRUPTIONS, names, visual_blur, visual_digital, visual_noise, visual_weather
from uvav.corruptions import _visual_common as common

FAMILIES = {
    "noise": ["gaussian_noise", "shot_noise", "impulse_noise"],
    "blur": ["defocus_blur", "glass_blur", "motion_blur", "zoom_blur"],
    "weather": ["snow", "frost", "fog"],
    "digital": ["brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression"],
}
VISUAL = [name for family in FAMILIES.values() for name in family]  # ImageNet-C's listing order
RANDOM = {"gaussian_noise", "shot_noise", "impulse_noise", "glass_blur", "motion_blur", "snow", "frost", "fog",
          "elastic_transform"}
SEVERITIES = [1, 2, 3, 4, 5]


def frame(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A seeded test frame: uniform noise with flat grey, black, white and pure-colour patches and a smooth ramp
    (ties between channels, flat regions and saturated values, where rounding and HSV conversions go wrong)."""
    rng = np.random.RandomState(seed)
    image = rng.randint(0, 256, (height, width, 3)).astype(np.uint8)
    h, w = height // 4, width // 4
    image[:h, :w] = 128
    image[:h, w:2 * w] = 0
    image[h:2 * h, :w] = 255
    image[h:2 * h, w:2 * w] = (255, 0, 0)
    image[2 * h:3 * h, :w] = (0, 200, 200)
    image[3 * h:, :] = np.linspace(0, 255, width).astype(np.uint8)[np.newaxis, :, np.newaxis]
    return image


def run(name: str, image: np.ndarray, severity: int, seed: int) -> np.ndarray:
    return CORRUPTIONS.get(name)(image, severity, np.random.RandomState(seed))


# ---------------------------------------------------------------------------------------------------------------------
# the reference: imagecorruptions 1.1.2 under a shim for what current libraries removed or changed


def _salt_and_pepper(image: np.ndarray, mode: str, amount: float, salt_vs_pepper: float = 0.5,
                     clip: bool = True) -> np.ndarray:
    """``skimage.util.random_noise(mode='s&p')`` as scikit-image <= 0.15 (ImageNet-C's time) computed it: two
    ``np.random.choice`` draws from numpy's global state. scikit-image 0.26 draws from ``np.random.default_rng()``,
    which ``np.random.seed`` does not seed, so the unshimmed reference is not even reproducible."""
    assert mode == "s&p"
    out = image.copy()
    flipped = np.random.choice([True, False], size=image.shape, p=[amount, 1 - amount])
    salted = np.random.choice([True, False], size=image.shape, p=[salt_vs_pepper, 1 - salt_vs_pepper])
    out[flipped & salted] = 1
    out[flipped & ~salted] = 0
    return np.clip(out, 0, 1) if clip else out


@pytest.fixture(scope="module")
def reference() -> Iterator[Any]:
    """``imagecorruptions.corrupt``, made to run on numpy 2 / scikit-image 0.26 / setuptools >= 81 / scipy 1.17:
    ``pkg_resources`` (gone from setuptools) is faked for the frost files; ``np.float_`` (gone in numpy 2, fog) is
    ``np.float64``; ``skimage.filters.gaussian``'s ``multichannel=True`` (gone, glass blur) becomes
    ``channel_axis=-1``; ``random_noise`` (impulse noise) draws as it used to. Its ``from
    scipy.ndimage.interpolation import map_coordinates`` still works on scipy 1.17 (deprecated, not removed)."""
    spec = importlib.util.find_spec("imagecorruptions")
    if spec is None:
        pytest.skip("imagecorruptions is not installed")
    root = Path(next(iter(spec.submodule_search_locations)))
    with pytest.MonkeyPatch.context() as patch:
        fake = types.ModuleType("pkg_resources")
        fake.resource_filename = lambda package, path: str(root / path)  # type: ignore[attr-defined]
        patch.setitem(sys.modules, "pkg_resources", fake)
        patch.setattr(np, "float_", np.float64, raising=False)
        import skimage.util

        patch.setattr(skimage.util, "random_noise", _salt_and_pepper)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # scipy.ndimage.interpolation
            package = pytest.importorskip("imagecorruptions")
        module = sys.modules["imagecorruptions.corruptions"]
        gaussian = module.gaussian

        def gaussian_shim(*args: Any, multichannel: bool | None = None, **kwargs: Any) -> Any:
            return gaussian(*args, **kwargs, **({"channel_axis": -1} if multichannel else {}))

        patch.setattr(module, "gaussian", gaussian_shim)
        yield package.corrupt


@pytest.mark.parametrize("severity", SEVERITIES)
@pytest.mark.parametrize("name", VISUAL)
def test_equals_imagecorruptions(reference: Any, name: str, severity: int) -> None:
    """Exactly equal, every corruption and severity, on a non-square frame larger than 64 px: both draw the same
    numbers (numpy's global state seeded as our RandomState) and compute in the same order and float types."""
    image = frame(96, 80, seed=severity)
    seed = 1000 + severity
    np.random.seed(seed)
    expected = reference(image, corruption_name=name, severity=severity)
    np.testing.assert_array_equal(run(name, image, severity, seed), expected)


def test_glass_blur_shuffle_equals_the_loop() -> None:
    """The vectorised shuffle equals ImageNet-C's pixel loop (its one-way "swap") for every displacement, also on
    non-square frames and small ones."""
    for (height, width), max_delta in [((40, 40), 1), ((33, 47), 2), ((50, 30), 3), ((24, 24), 4), ((9, 9), 4)]:
        image = frame(height, width, seed=max_delta)
        expected = image.copy()
        rng = np.random.RandomState(max_delta)
        for h in range(height - max_delta, max_delta, -1):
            for w in range(width - max_delta, max_delta, -1):
                dx, dy = rng.randint(-max_delta, max_delta, size=(2,))
                expected[h, w], expected[h + dy, w + dx] = expected[h + dy, w + dx], expected[h, w]
        got = visual_blur._local_shuffle(image, max_delta, np.random.RandomState(max_delta))
        np.testing.assert_array_equal(got, expected)


# ---------------------------------------------------------------------------------------------------------------------
# CIFAR-10-C's table for small frames

# Transcribed from hendrycks/robustness, ImageNet-C/create_c/make_cifar_c.py (commit 8190fe3), the `c = [...]` of each
# function; elastic_transform's entries are there multiples of IMSIZE = 32 (here the fractions), zoom_blur's are
# np.arange(start, stop, step) arguments.
CIFAR_10_C = {
    "gaussian_noise": [0.04, 0.06, .08, .09, .10],
    "shot_noise": [500, 250, 100, 75, 50],
    "impulse_noise": [.01, .02, .03, .05, .07],
    "defocus_blur": [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],
    "glass_blur": [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)],
    "motion_blur": [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)],
    "zoom_blur": [(1, 1.06, 0.01), (1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.01), (1, 1.26, 0.01)],
    "snow": [(0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
             (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)],
    "frost": [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)],
    "fog": [(.2, 3), (.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)],
    "brightness": [.05, .1, .15, .2, .3],
    "contrast": [.75, .5, .4, .3, 0.15],
    "elastic_transform": [(0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)],
    "pixelate": [0.95, 0.9, 0.85, 0.75, 0.65],
    "jpeg_compression": [80, 65, 58, 50, 40],
}
MODULES = {"noise": visual_noise, "blur": visual_blur, "weather": visual_weather, "digital": visual_digital}


def table(name: str) -> common.Severities[Any]:
    family = next(f for f, members in FAMILIES.items() if name in members)
    return getattr(MODULES[family], name.upper())


@pytest.mark.parametrize("name", VISUAL)
def test_cifar_table_is_the_published_one(name: str) -> None:
    assert [tuple(p) if isinstance(p, tuple) else p for p in table(name).cifar] == CIFAR_10_C[name]
    assert len(table(name).imagenet) == 5
    for severity in SEVERITIES:
        assert table(name).pick(frame(32, 32), severity) == CIFAR_10_C[name][severity - 1]
        assert table(name).pick(frame(96, 96), severity) == table(name).imagenet[severity - 1]


def test_size_rule() -> None:
    """One rule: the larger side at most 64 px -> CIFAR-10-C's table."""
    for shape, small in [((32, 32), True), ((33, 47), True), ((64, 64), True), ((20, 64), True), ((64, 65), False),
                         ((65, 10), False), ((96, 96), False), ((224, 224), False)]:
        assert common.is_small(np.zeros((*shape, 3), np.uint8)) is small, shape


@pytest.mark.parametrize("severity", SEVERITIES)
def test_a_32_px_frame_gets_cifar_parameters(severity: int) -> None:
    """CIFAR-10-C's formulas at its parameters, written out here, on a 32 px frame."""
    image, seed, c = frame(32, 32), 7, {name: CIFAR_10_C[name][severity - 1] for name in VISUAL}
    x = image / 255.0
    noise = np.random.RandomState(seed).normal(size=x.shape, scale=c["gaussian_noise"])
    np.testing.assert_array_equal(run("gaussian_noise", image, severity, seed),
                                  np.uint8(np.clip(x + noise, 0, 1) * 255))
    photons = c["shot_noise"]
    shot = np.random.RandomState(seed).poisson(x * photons) / photons
    np.testing.assert_array_equal(run("shot_noise", image, severity, seed), np.uint8(np.clip(shot, 0, 1) * 255))
    means = x.mean(axis=(0, 1), keepdims=True)
    np.testing.assert_array_equal(run("contrast", image, severity, seed),
                                  np.uint8(np.clip((x - means) * c["contrast"] + means, 0, 1) * 255))
    side = int(32 * c["pixelate"])
    pixelated = Image.fromarray(image).resize((side, side), Image.BOX).resize((32, 32), Image.BOX)
    np.testing.assert_array_equal(run("pixelate", image, severity, seed), np.asarray(pixelated))
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=c["jpeg_compression"])
    np.testing.assert_array_equal(run("jpeg_compression", image, severity, seed), np.asarray(Image.open(buffer)))


# ---------------------------------------------------------------------------------------------------------------------
# registry, determinism, shapes


def test_registered() -> None:
    assert [n for n in names("visual") if CORRUPTIONS.get(n).fn.__module__.startswith("uvav.")] == VISUAL  # a test's
    for family, members in FAMILIES.items():
        for name in members:
            corruption = CORRUPTIONS.get(name)
            assert (corruption.modality, corruption.family) == ("visual", family)
            assert corruption.reference
            assert (corruption.needs is not None) == (name == "frost")
    assert "imagecorruptions" in CORRUPTIONS.get("frost").needs


@pytest.mark.parametrize("name", VISUAL)
def test_deterministic(name: str) -> None:
    for image in (frame(32, 32), frame(72, 72)):
        first = run(name, image, 3, seed=11)
        np.testing.assert_array_equal(first, run(name, image, 3, seed=11))
        assert not np.array_equal(first, image)
        assert (not np.array_equal(first, run(name, image, 3, seed=12))) == (name in RANDOM)


@pytest.mark.parametrize("name", VISUAL)
def test_shape_dtype_and_input_kept(name: str) -> None:
    for height, width in [(33, 47), (67, 101), (13, 9)]:
        image = frame(height, width)
        kept = image.copy()
        for severity in SEVERITIES:
            out = run(name, image, severity, seed=severity)
            assert out.shape == image.shape and out.dtype == np.uint8
        np.testing.assert_array_equal(image, kept)


@pytest.mark.parametrize("name", VISUAL)
def test_severity_out_of_range(name: str) -> None:
    for severity in (0, 6):
        with pytest.raises(ValueError, match="severity"):
            run(name, frame(32, 32), severity, seed=0)


def test_frost_without_imagecorruptions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(visual_weather.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="frost needs the frost photographs of the imagecorruptions"):
        run("frost", frame(96, 96), 1, seed=0)
