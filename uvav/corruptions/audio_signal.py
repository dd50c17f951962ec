"""Signal-chain corruptions of the waveform, at five severities: clipping, band-limiting (low-pass, band-pass) and
time masking (a silent gap).

Each is an audiomentations 0.43.1 transform (``ClippingDistortion``, ``LowPassFilter``, ``BandPassFilter``,
``TimeMask``) with its range pinned to one value per severity (min = max); nothing is written by hand but the
tables. The draws the library still makes (the gap's position; the pinned draws) are seeded from the corruption's
``rng`` by :func:`uvav.corruptions.audio_noise.apply_transform`, which also restores Python's and numpy's global
generators afterwards and clips to [-1, 1]. audiomentations (and librosa with it) is imported inside the functions.
"""

from __future__ import annotations

import numpy as np

from uvav.corruptions import register
from uvav.corruptions.audio_noise import apply_transform

# Nothing published at five levels: the share of samples clipped (audiomentations' percentile_threshold: the
# lowest and highest half of it are clipped to the percentiles), monotone up to the library's default maximum 40 %.
# Even numbers, so each side is a whole percentile (the library truncates the half to an int).
CLIP_PERCENT = (4, 10, 20, 30, 40)

# AVRobustBench (2025) compression_audio: 6th-order Butterworth low-pass (36 dB/octave, causal) at
# [8000, 6000, 4000, 2000, 1000] Hz. Its level 1 is the Nyquist frequency of its own 16 kHz audio (scipy rejects
# it; audiomentations would cap it to a filter that does nothing), so level 1 is 7000 Hz here (chosen); 2-5 are
# AVRobustBench's.
LOW_PASS_HZ = (7000.0, 6000.0, 4000.0, 2000.0, 1000.0)
LOW_PASS_ROLLOFF = 36  # dB/octave: AVRobustBench's order 6

# Nothing published at five levels: nested pass bands (Hz), from wide-band to narrower than a telephone line
# (level 2 is the telephone band, 300-3400 Hz); 24 dB/octave on each side, causal.
BAND_PASS_HZ = ((150.0, 6000.0), (300.0, 3400.0), (500.0, 2500.0), (700.0, 1800.0), (900.0, 1300.0))
BAND_PASS_ROLLOFF = 24

# AVRobustBench (2025) interference_audio: the fraction of the clip made silent. AVRobustBench cuts it into
# 2 x severity chunks at random (possibly overlapping) places; audiomentations' TimeMask makes one gap, so here it
# is one gap of exactly that fraction, hard-edged (no fade) as AVRobustBench's.
TIME_MASK_FRACTION = (0.1, 0.2, 0.3, 0.4, 0.5)


@register("clipping", "audio", "signal", order=110,
          reference="clip [4, 10, 20, 30, 40] % of samples, half at each extreme (chosen); "
                    "audiomentations ClippingDistortion")
def clipping(waveform: np.ndarray, severity: int, rng: np.random.RandomState, *, sample_rate: int) -> np.ndarray:
    """Hard clipping: :data:`CLIP_PERCENT` % of the samples (half at each extreme) clipped to the percentiles."""
    from audiomentations import ClippingDistortion

    percent = CLIP_PERCENT[severity - 1]
    transform = ClippingDistortion(min_percentile_threshold=percent, max_percentile_threshold=percent, p=1.0)
    return apply_transform(transform, waveform, sample_rate, rng)


def low_pass_transform(severity: int) -> object:
    """audiomentations' ``LowPassFilter`` pinned to the severity's cutoff and roll-off."""
    from audiomentations import LowPassFilter

    cutoff = LOW_PASS_HZ[severity - 1]
    return LowPassFilter(min_cutoff_freq=cutoff, max_cutoff_freq=cutoff, min_rolloff=LOW_PASS_ROLLOFF,
                         max_rolloff=LOW_PASS_ROLLOFF, zero_phase=False, p=1.0)


@register("low_pass", "audio", "signal", order=111,
          reference="AVRobustBench (2025) compression_audio: 36 dB/octave low-pass at [7000 (theirs: 8000), 6000, "
                    "4000, 2000, 1000] Hz; audiomentations LowPassFilter")
def low_pass(waveform: np.ndarray, severity: int, rng: np.random.RandomState, *, sample_rate: int) -> np.ndarray:
    """Low-pass filtering (Butterworth, causal) at :data:`LOW_PASS_HZ`, capped below the Nyquist frequency."""
    return apply_transform(low_pass_transform(severity), waveform, sample_rate, rng)


def band_pass_transform(severity: int) -> object:
    """audiomentations' ``BandPassFilter`` pinned to the severity's band: its centre is the band's middle, its
    bandwidth fraction the band's width over the centre."""
    from audiomentations import BandPassFilter

    low, high = BAND_PASS_HZ[severity - 1]
    centre = (low + high) / 2
    fraction = (high - low) / centre
    return BandPassFilter(min_center_freq=centre, max_center_freq=centre, min_bandwidth_fraction=fraction,
                          max_bandwidth_fraction=fraction, min_rolloff=BAND_PASS_ROLLOFF,
                          max_rolloff=BAND_PASS_ROLLOFF, zero_phase=False, p=1.0)


@register("band_pass", "audio", "signal", order=112,
          reference="24 dB/octave band-pass [150-6000, 300-3400, 500-2500, 700-1800, 900-1300] Hz (chosen); "
                    "audiomentations BandPassFilter")
def band_pass(waveform: np.ndarray, severity: int, rng: np.random.RandomState, *, sample_rate: int) -> np.ndarray:
    """Band-pass filtering (Butterworth, causal) to :data:`BAND_PASS_HZ`."""
    return apply_transform(band_pass_transform(severity), waveform, sample_rate, rng)


@register("time_mask", "audio", "signal", order=113,
          reference="AVRobustBench (2025) interference_audio: [10, 20, 30, 40, 50] % of the clip silent (one gap "
                    "here); audiomentations TimeMask")
def time_mask(waveform: np.ndarray, severity: int, rng: np.random.RandomState, *, sample_rate: int) -> np.ndarray:
    """One silent gap of :data:`TIME_MASK_FRACTION` of the clip at a random place (drawn from ``rng``)."""
    from audiomentations import TimeMask

    fraction = TIME_MASK_FRACTION[severity - 1]
    transform = TimeMask(min_band_part=fraction, max_band_part=fraction, fade_duration=0.0, mask_location="random",
                         p=1.0)
    return apply_transform(transform, waveform, sample_rate, rng)
