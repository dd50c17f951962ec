"""Environmental noise mixed from recordings, as READ (ICLR 2024) corrupts audio: traffic, crowd, rain, thunder and
wind, at five severities.

READ (make_corruptions/make_c_audio.py) mixes one recording per corruption, ``<name>.wav``, into every clip: the
recording from its start, repeated when shorter than the clip and cut to the clip's length, raised by a fixed gain
of [1, 2, 4, 6, 8] dB (its own level, not a signal-to-noise ratio), added to the clip and stored as 16-bit WAV
(clipped to [-1, 1]). READ does not publish the recordings and uvav cannot download them: each corruption is
registered with ``needs=`` naming its file, and reads it from a folder the user gives, ``recordings=<folder>``
(a keyword of the call) or else ``$UVAV_AUDIO_RECORDINGS`` (how ``data.audio_corruption=rain`` finds it); without
one, or when the folder lacks the file, the call fails in one line.

Written by hand, not with audiomentations' ``AddBackgroundNoise``: that transform rescales the recording to a
signal-to-noise ratio or to an absolute RMS and reads it from a random offset, so it cannot express READ's rule
(a fixed gain on the recording's own level, from its start); the mixing is a few lines of numpy. Nothing is drawn
(READ draws nothing), so the result does not depend on ``rng``. A different sample rate is resampled with scipy's
polyphase filter (READ's pydub mixed at the higher of the two rates); channels are averaged to mono.
"""

from __future__ import annotations

import os
from functools import lru_cache
from math import gcd
from pathlib import Path

import numpy as np

from uvav.corruptions import register

RECORDINGS_ENV = "UVAV_AUDIO_RECORDINGS"
NOISES = ("traffic", "crowd", "rain", "thunder", "wind")  # READ's audio corruptions besides gaussian_noise

# READ (ICLR 2024), make_corruptions/make_c_audio.py: the gain (dB) applied to the recording before it is added
GAIN_DB = (1.0, 2.0, 4.0, 6.0, 8.0)


def _needs(name: str) -> str:
    return (f"READ's recording {name}.wav (not published): a folder holding it, given as recordings=<folder> or "
            f"${RECORDINGS_ENV}")


def recording_path(name: str, recordings: str | os.PathLike[str] | None) -> Path:
    """The file of recording ``name`` in the folder given (else ``$UVAV_AUDIO_RECORDINGS``); a one-line error
    without a folder, or when it lacks the file."""
    from uvav.errors import DataPathError

    given = recordings if recordings not in (None, "") else os.environ.get(RECORDINGS_ENV) or None
    if given is None:
        raise DataPathError(f"audio corruption {name!r} mixes READ's recording {name}.wav, which uvav cannot "
                            f"download: pass recordings=<folder> or set ${RECORDINGS_ENV} to a folder holding "
                            f"{', '.join(n + '.wav' for n in NOISES)}")
    folder = Path(given).expanduser()
    path = folder / f"{name}.wav"
    if not path.is_file():
        what = "does not exist" if not folder.is_dir() else "is empty" if not any(folder.iterdir()) else \
            f"has no {name}.wav"
        raise DataPathError(f"audio corruption {name!r}: the recordings folder {str(folder)!r} {what}; it needs "
                            f"READ's recording {name}.wav (one of {', '.join(n + '.wav' for n in NOISES)})")
    return path


@lru_cache(maxsize=8)
def _load(path: str, mtime_ns: int, size: int, sample_rate: int) -> np.ndarray:
    """The recording as float32 mono at ``sample_rate`` (cached by path, modification time and size)."""
    import soundfile as sf

    data, rate = sf.read(path, dtype="float32", always_2d=True)
    noise = data.mean(axis=1)
    if rate != sample_rate:
        from scipy.signal import resample_poly

        g = gcd(int(rate), int(sample_rate))
        noise = resample_poly(noise, sample_rate // g, int(rate) // g).astype(np.float32)
    if noise.size == 0:
        from uvav.errors import DataPathError

        raise DataPathError(f"the recording {path} holds no samples")
    noise.flags.writeable = False
    return noise


def load_recording(path: Path, sample_rate: int) -> np.ndarray:
    """The recording at ``path`` as float32 mono at ``sample_rate`` (read once while the file is unchanged)."""
    stat = path.stat()
    return _load(str(path), stat.st_mtime_ns, stat.st_size, int(sample_rate))


def mix_read(waveform: np.ndarray, noise: np.ndarray, severity: int) -> np.ndarray:
    """READ's mix: ``noise`` from its start, tiled or cut to the clip, times the severity's gain, added, clipped."""
    gain = 10.0 ** (GAIN_DB[severity - 1] / 20.0)
    tiled = np.resize(noise, waveform.shape[-1])  # repeats the recording from its start
    out = waveform.astype(np.float64) + gain * tiled.astype(np.float64)
    return np.clip(out, -1.0, 1.0).astype(waveform.dtype)


def _register_noise(name: str, order: int) -> None:
    def corrupt(waveform: np.ndarray, severity: int, rng: np.random.RandomState, *, sample_rate: int,
                recordings: str | os.PathLike[str] | None = None) -> np.ndarray:
        path = recording_path(name, recordings)
        if waveform.size == 0:
            return waveform.copy()
        return mix_read(waveform, load_recording(path, sample_rate), severity)

    corrupt.__name__ = corrupt.__qualname__ = name
    corrupt.__doc__ = f"READ's {name} noise: its recording {name}.wav added at a gain of :data:`GAIN_DB`."
    register(name, "audio", "environment", order=order, needs=_needs(name),
             reference=f"READ (ICLR 2024) {name}: {name}.wav + [1, 2, 4, 6, 8] dB, added from its start "
                       f"(make_c_audio.py)")(corrupt)


for _i, _name in enumerate(NOISES):
    _register_noise(_name, 120 + _i)
