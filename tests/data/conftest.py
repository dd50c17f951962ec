"""Builders of tiny datasets in the real layouts, and the real-data location (skip, or fail on CI)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from uvav.data.av_mnist import MNIST_IMAGES, MNIST_LABELS, RECORDINGS, find_data_root
from uvav.data.base import AVSplit
from uvav.data.urbansound8k_av import CLASS_NAMES, SOUND_DIR, VISION_DIR

RATES = (8000, 22050, 44100, 16000)
SECONDS = (0.01, 0.3, 1.2)  # shorter than one window, shorter than target, longer than target (64 frames)


def write_tone(path: Path, rate: int, seconds: float, channels: int = 1, freq: float = 440.0, seed: int = 0) -> None:
    """A 16-bit WAV: a tone plus a little noise (the second channel at half amplitude)."""
    n = int(round(rate * seconds))
    t = np.arange(n) / rate
    x = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * np.random.default_rng(seed).standard_normal(n)
    data = np.stack([x, 0.5 * x], axis=1) if channels == 2 else x
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data.astype(np.float32), rate, subtype="PCM_16")


def write_image(path: Path, kind: int, label: int) -> None:
    """One of four formats/modes, sizes not square: JPEG RGB, PNG RGBA, PNG greyscale, .jpeg greyscale."""
    rgb = np.zeros((36, 48, 3), dtype=np.uint8)
    rgb[..., label % 3] = 40 + 20 * label
    rgb[:, : 4 * (label + 1)] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(rgb)
    if kind == 0:
        img.save(path.with_suffix(".jpg"), quality=90)
    elif kind == 1:
        img.convert("RGBA").resize((40, 40)).save(path.with_suffix(".png"))
    elif kind == 2:
        img.convert("L").resize((30, 50)).save(path.with_suffix(".png"))
    else:
        img.convert("L").save(path.with_suffix(".jpeg"), quality=90)


def make_us8k(root: Path, per_class: int = 4) -> list[str]:
    """UrbanSound8K-AV layout with mixed rates, channel counts, lengths and image formats; returns stems."""
    stems = []
    for label, cls in enumerate(CLASS_NAMES):
        for i in range(per_class):
            k = label * per_class + i
            stem = f"{100000 + k}-{label}-0-{i}"
            seconds = 0.0 if k == 5 else SECONDS[k % 3]
            write_tone(root / SOUND_DIR / cls / f"{stem}.wav", RATES[k % 4], seconds, 1 + k % 2,
                       freq=200.0 + 150 * label, seed=k)
            write_image(root / VISION_DIR / cls / stem, k % 4, label)
            stems.append(stem)
    return stems


def write_idx(path: Path, array: np.ndarray) -> None:
    """A gzipped idx file of unsigned bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def make_fake_av_mnist(root: Path, takes: int = 7, images_per_digit: int = 20) -> Path:
    """A miniature FSDD + MNIST in the real layout (one speaker, ``takes`` takes per digit)."""
    rng = np.random.default_rng(0)
    for digit in range(10):
        for take in range(takes):
            write_tone(root / RECORDINGS / f"{digit}_sam_{take}.wav", 8000, 0.2 + 0.05 * take,
                       freq=300.0 + 100 * digit, seed=digit * 100 + take)
    labels = np.repeat(np.arange(10), images_per_digit)
    images = rng.integers(0, 256, (labels.size, 28, 28))
    write_idx(root / MNIST_IMAGES, images)
    write_idx(root / MNIST_LABELS, labels)
    return root


def stack(split: AVSplit) -> tuple[torch.Tensor, torch.Tensor]:
    """Every sample of a split as two tensors ``[N, T, F]`` and ``[N, 3, S, S]`` (small test data only)."""
    audio, visual = zip(*(split.sample(i) for i in range(len(split))), strict=True)
    return torch.stack(audio), torch.stack(visual)


def locate_real_root() -> Path:
    """The real data, located as the loader does; skips the test when absent, fails it on CI."""
    try:
        return find_data_root(None)
    except FileNotFoundError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"real data required on CI: {exc}")
        pytest.skip(f"real data (../shared/data or $UVAV_DATA_ROOT) not available: {exc}")


@pytest.fixture
def real_root() -> Path:
    return locate_real_root()
