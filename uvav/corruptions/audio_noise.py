"""Additive noise on the waveform, at five severities: white Gaussian noise at a fixed amplitude (READ's
``gaussian_noise``) or at a signal-to-noise ratio (AVRobustBench's), and coloured noise at an SNR (pink, brown,
blue, violet: the colours audiomentations ships; white is ``gaussian_snr``, red/brownian are brown, azure is blue).

Every corruption here is an audiomentations 0.43.1 transform (``AddGaussianNoise``, ``AddGaussianSNR``,
``AddColorNoise``) with its range pinned to one value per severity (min = max), so a severity is one strength;
nothing is written by hand but the tables, the seeding and the final clip to [-1, 1] (what a 16-bit WAV stores:
READ wrote its corrupted clips with ``soundfile.write``, which clips). audiomentations draws from Python's
``random`` and numpy's global generator: :func:`seeded_globals` seeds both from the corruption's ``rng`` for the
call and restores their previous states afterwards, so a call is a function of ``rng`` alone and nothing outside
sees a change. audiomentations imports librosa (about 0.8 s), so it is imported inside the functions, never when
the registry discovers this module.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from uvav.corruptions import register

# one call at a time holds the global generators (audiomentations' draws); DataLoader workers are processes
_GLOBAL_RNG_LOCK = threading.RLock()


@contextmanager
def seeded_globals(rng: np.random.RandomState) -> Iterator[None]:
    """Seed Python's ``random`` and numpy's global generator from ``rng`` (two draws of it) for the block; restore
    both states afterwards, so code outside the block sees no change."""
    py_seed, np_seed = (int(s) for s in rng.randint(0, 2**31 - 1, size=2))
    with _GLOBAL_RNG_LOCK:
        py_state, np_state = random.getstate(), np.random.get_state()
        random.seed(py_seed)
        np.random.seed(np_seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def apply_transform(transform: Any, waveform: np.ndarray, sample_rate: int, rng: np.random.RandomState
                    ) -> np.ndarray:
    """``transform`` (an audiomentations waveform transform with ``p=1``) applied to ``waveform`` with every draw
    seeded from ``rng``, clipped to [-1, 1], in the input's dtype."""
    if waveform.size == 0:
        return waveform.copy()
    samples = np.ascontiguousarray(waveform, dtype=np.float32)
    with seeded_globals(rng):
        out = transform(samples, sample_rate)
    return np.clip(out, -1.0, 1.0).astype(waveform.dtype, copy=False)


# READ (ICLR 2024), make_corruptions/make_c_audio.py, gaussian_noise: waveform + N(0, std^2), std per severity
# (ImageNet-C's Gaussian-noise table, applied to the waveform)
GAUSSIAN_STD = (0.08, 0.12, 0.18, 0.26, 0.38)

# AVRobustBench (2025), data_recipe/src/generate_audio_corruptions.py, NOISE_SNRS: gaussian_noise at these SNRs (dB)
SNR_DB = (40.0, 30.0, 20.0, 10.0, 0.0)

# coloured noise: nothing published at five levels; the same SNRs as gaussian_snr (chosen), so the colours compare
COLOR_SNR_DB = SNR_DB
COLORS = ("pink", "brown", "blue", "violet")  # audiomentations' NOISE_COLOR_DECAYS, less white and its aliases


@register("gaussian_std", "audio", "noise", order=100,
          reference="READ (ICLR 2024) gaussian_noise: + N(0, std^2), std [.08, .12, .18, .26, .38]; "
                    "audiomentations AddGaussianNoise")
def gaussian_std(waveform: np.ndarray, severity: int, rng: np.random.RandomState, *, sample_rate: int
                 ) -> np.ndarray:
    """READ's gaussian_noise: white Gaussian noise of a fixed standard deviation (:data:`GAUSSIAN_STD`)."""
    from audiomentations import AddGaussianNoise

    std = GAUSSIAN_STD[severity - 1]
    return apply_transform(AddGaussianNoise(min_amplitude=std, max_amplitude=std, p=1.0), waveform, sample_rate, rng)


@register("gaussian_snr", "audio", "noise", order=101,
          reference="AVRobustBench (2025) gaussian_noise: white noise at SNR [40, 30, 20, 10, 0] dB; "
                    "audiomentations AddGaussianSNR")
def gaussian_snr(waveform: np.ndarray, severity: int, rng: np.random.RandomState, *, sample_rate: int
                 ) -> np.ndarray:
    """White Gaussian noise at a signal-to-noise ratio (:data:`SNR_DB`), relative to the clip's RMS."""
    from audiomentations import AddGaussianSNR

    snr = SNR_DB[severity - 1]
    return apply_transform(AddGaussianSNR(min_snr_db=snr, max_snr_db=snr, p=1.0), waveform, sample_rate, rng)


def color_transform(color: str, severity: int) -> Any:
    """audiomentations' ``AddColorNoise`` pinned to ``color`` and the severity's SNR (no A-weighting)."""
    from audiomentations import NOISE_COLOR_DECAYS, AddColorNoise

    snr, decay = COLOR_SNR_DB[severity - 1], NOISE_COLOR_DECAYS[color]
    return AddColorNoise(min_snr_db=snr, max_snr_db=snr, min_f_decay=decay, max_f_decay=decay,
                         p_apply_a_weighting=0.0, p=1.0)


def _register_color(color: str, order: int) -> None:
    def corrupt(waveform: np.ndarray, severity: int, rng: np.random.RandomState, *, sample_rate: int
                ) -> np.ndarray:
        return apply_transform(color_transform(color, severity), waveform, sample_rate, rng)

    corrupt.__name__ = corrupt.__qualname__ = f"{color}_snr"
    corrupt.__doc__ = f"{color.capitalize()} noise at a signal-to-noise ratio (:data:`COLOR_SNR_DB`)."
    register(f"{color}_snr", "audio", "noise", order=order,
             reference=f"{color} noise at SNR [40, 30, 20, 10, 0] dB (chosen: AVRobustBench's Gaussian SNRs); "
                       f"audiomentations AddColorNoise")(corrupt)


for _i, _color in enumerate(COLORS):
    _register_color(_color, 102 + _i)
