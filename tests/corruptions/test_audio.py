"""Audio corruptions (uvav/corruptions/audio_*.py): the registry entries, equality with audiomentations' own output
under the same parameters and seeding, the property each severity states (SNR, share clipped, band, share
silent, gain), monotone severities, determinism, and the recordings the environmental ones need."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from uvav.corruptions import CORRUPTIONS, names
from uvav.corruptions.audio_environment import GAIN_DB, NOISES, RECORDINGS_ENV
from uvav.errors import DataPathError

SR = 16000
SEVERITIES = (1, 2, 3, 4, 5)
FAMILIES = {
    "noise": ("gaussian_std", "gaussian_snr", "pink_snr", "brown_snr", "blue_snr", "violet_snr"),
    "signal": ("clipping", "low_pass", "band_pass", "time_mask"),
    "environment": NOISES,
}
LIBRARY = FAMILIES["noise"] + FAMILIES["signal"]  # the audiomentations-backed ones
STOCHASTIC = FAMILIES["noise"] + ("time_mask",)  # those whose output depends on the rng
# the tables, written out here so a change of the modules' parameters shows
STD = (0.08, 0.12, 0.18, 0.26, 0.38)
SNR = (40.0, 30.0, 20.0, 10.0, 0.0)
CLIP = (4, 10, 20, 30, 40)
LOW = (7000.0, 6000.0, 4000.0, 2000.0, 1000.0)
BAND = ((150.0, 6000.0), (300.0, 3400.0), (500.0, 2500.0), (700.0, 1800.0), (900.0, 1300.0))
MASK = (0.1, 0.2, 0.3, 0.4, 0.5)
DECAY = {"pink": -3.0103, "brown": -6.0206, "blue": 3.0103, "violet": 6.0206}  # dB/octave


def sines(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    """A seeded sum of sines (peak < 0.3, so 0 dB SNR noise never reaches the clip at 1)."""
    r = np.random.RandomState(seed)
    t = np.arange(int(seconds * SR)) / SR
    x = sum(a * np.sin(2 * np.pi * f * t + p) for a, f, p in zip(r.uniform(0.02, 0.05, 6),
                                                                   (220, 440, 1000, 2500, 4500, 7000),
                                                                   r.uniform(0.1, 6.0, 6), strict=True))
    return x.astype(np.float32)


def white(seconds: float = 1.0, seed: int = 1) -> np.ndarray:
    return (0.1 * np.random.RandomState(seed).randn(int(seconds * SR))).astype(np.float32)


def corrupt(name: str, x: np.ndarray, severity: int, seed: int = 0, **context: object) -> np.ndarray:
    return CORRUPTIONS.get(name)(x, severity, np.random.RandomState(seed), sample_rate=SR, **context)


def snr_db(x: np.ndarray, y: np.ndarray) -> float:
    d = y.astype(np.float64) - x
    return float(10 * np.log10(np.mean(x.astype(np.float64) ** 2) / np.mean(d**2)))


def band_gain_db(x: np.ndarray, y: np.ndarray, low: float, high: float) -> float:
    """The output's power over the input's in [low, high) Hz, in the second half (past the filter's start)."""
    half = x.size // 2
    f = np.fft.rfftfreq(half, 1 / SR)
    sel = (f >= low) & (f < high)
    px, py = (np.abs(np.fft.rfft(v[half:].astype(np.float64))) ** 2 for v in (x, y))
    return float(10 * np.log10(py[sel].sum() / px[sel].sum()))


def library_transform(name: str, severity: int):
    """The audiomentations transform with the published/chosen parameters of ``name`` at ``severity``."""
    import audiomentations as am

    i = severity - 1
    if name == "gaussian_std":
        return am.AddGaussianNoise(min_amplitude=STD[i], max_amplitude=STD[i], p=1.0)
    if name == "gaussian_snr":
        return am.AddGaussianSNR(min_snr_db=SNR[i], max_snr_db=SNR[i], p=1.0)
    if name.endswith("_snr"):
        decay = am.NOISE_COLOR_DECAYS[name[:-4]]
        return am.AddColorNoise(min_snr_db=SNR[i], max_snr_db=SNR[i], min_f_decay=decay, max_f_decay=decay,
                                p_apply_a_weighting=0.0, p=1.0)
    if name == "clipping":
        return am.ClippingDistortion(min_percentile_threshold=CLIP[i], max_percentile_threshold=CLIP[i], p=1.0)
    if name == "low_pass":
        return am.LowPassFilter(min_cutoff_freq=LOW[i], max_cutoff_freq=LOW[i], min_rolloff=36, max_rolloff=36,
                                zero_phase=False, p=1.0)
    if name == "band_pass":
        low, high = BAND[i]
        centre = (low + high) / 2
        return am.BandPassFilter(min_center_freq=centre, max_center_freq=centre,
                                 min_bandwidth_fraction=(high - low) / centre,
                                 max_bandwidth_fraction=(high - low) / centre, min_rolloff=24, max_rolloff=24,
                                 zero_phase=False, p=1.0)
    assert name == "time_mask"
    return am.TimeMask(min_band_part=MASK[i], max_band_part=MASK[i], fade_duration=0.0, mask_location="random",
                       p=1.0)


def library_output(name: str, x: np.ndarray, severity: int, seed: int) -> np.ndarray:
    """audiomentations' output with its global generators seeded as uvav seeds them (two draws of the rng)."""
    py_seed, np_seed = np.random.RandomState(seed).randint(0, 2**31 - 1, size=2)
    states = random.getstate(), np.random.get_state()
    try:
        random.seed(int(py_seed))
        np.random.seed(int(np_seed))
        out = library_transform(name, severity)(x.copy(), SR)
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
    return np.clip(out, -1, 1)


@pytest.fixture
def recordings(tmp_path: Path) -> Path:
    """A folder of generated recordings: rain shorter than a clip and at 8 kHz (tiled, resampled), the others
    longer (cut), stereo for wind (averaged)."""
    r = np.random.RandomState(7)
    for name in NOISES:
        rate, seconds = (8000, 0.3) if name == "rain" else (SR, 1.5)
        noise = 0.05 * r.randn(int(rate * seconds))
        sf.write(tmp_path / f"{name}.wav", np.stack([noise, 0.5 * noise], 1) if name == "wind" else noise, rate,
                 subtype="FLOAT")
    return tmp_path


def test_registered_with_modality_family_and_needs() -> None:
    audio = set(names("audio"))
    for family, members in FAMILIES.items():
        for name in members:
            entry = CORRUPTIONS.get(name)
            assert (entry.modality, entry.family) == ("audio", family), name
            assert entry.reference, name
            assert (entry.needs is not None) == (family == "environment"), name
        assert set(members) <= audio
    for name in NOISES:
        assert f"{name}.wav" in CORRUPTIONS.get(name).needs and RECORDINGS_ENV in CORRUPTIONS.get(name).needs


@pytest.mark.parametrize("name", LIBRARY)
def test_equal_to_audiomentations(name: str) -> None:
    x = sines()
    for severity in SEVERITIES:
        np.testing.assert_array_equal(corrupt(name, x, severity, seed=3), library_output(name, x, severity, 3))


# audiomentations' output at severity 3, seed 0, on sines(): a change of the library (or of numpy's streams) shows
GOLDEN = {  # name: (sum of squares, sum weighted by a ramp from -1 to 1)
    "gaussian_std": (591.8235, -11.8815),
    "gaussian_snr": (68.2420, -0.0449),
    "pink_snr": (68.3569, 5.7106),
    "brown_snr": (68.2578, 5.9127),
    "blue_snr": (68.3735, 0.4324),
    "violet_snr": (68.3449, 0.4110),
    "clipping": (44.5630, 0.3810),
    "low_pass": (47.2841, 0.5183),
    "band_pass": (19.5380, -0.0026),
    "time_mask": (47.2643, 0.3107),
}


@pytest.mark.parametrize("name", LIBRARY)
def test_library_output_is_pinned(name: str) -> None:
    y = corrupt(name, sines(), 3).astype(np.float64)
    energy, ramp = GOLDEN[name]
    assert float(np.sum(y**2)) == pytest.approx(energy, rel=1e-4)
    assert float(y @ np.linspace(-1, 1, y.size)) == pytest.approx(ramp, rel=1e-3, abs=1e-3)


def test_gaussian_std_adds_the_stated_deviation() -> None:
    x = sines()
    for severity in SEVERITIES[:4]:  # at 0.38 the clip at +-1 cuts the tails
        assert np.std(corrupt("gaussian_std", x, severity) - x) == pytest.approx(STD[severity - 1], rel=0.03)
    assert np.abs(corrupt("gaussian_std", x, 5)).max() == 1.0


@pytest.mark.parametrize("name", FAMILIES["noise"][1:])
def test_noise_snr_is_the_table(name: str) -> None:
    x = sines()
    for severity in SEVERITIES:
        assert snr_db(x, corrupt(name, x, severity)) == pytest.approx(SNR[severity - 1], abs=0.1)


@pytest.mark.parametrize("color", DECAY)
def test_noise_colour_has_its_slope(color: str) -> None:
    """The added noise's power per Hz falls (rises) by about the colour's dB/octave, 1-2 kHz against 4-8 kHz
    (audiomentations shapes it with a 128-point envelope: within 1.5 dB/octave)."""
    x = sines()
    noise = corrupt(f"{color}_snr", x, 5).astype(np.float64) - x
    f = np.fft.rfftfreq(noise.size, 1 / SR)
    p = np.abs(np.fft.rfft(noise)) ** 2
    low, high = p[(f >= 1000) & (f < 2000)].mean(), p[(f >= 4000) & (f < 8000)].mean()
    assert 10 * np.log10(high / low) / 2 == pytest.approx(DECAY[color], abs=1.5)  # 2 octaves apart


def test_clipping_clips_the_stated_share() -> None:
    x = sines()
    for severity in SEVERITIES:
        y, percent = corrupt("clipping", x, severity), CLIP[severity - 1]
        assert np.mean(y != x) == pytest.approx(percent / 100, abs=2 / x.size)
        low, high = np.percentile(x, [percent // 2, 100 - percent // 2]).astype(np.float32)
        assert (y.min(), y.max()) == (low, high)


def test_low_pass_removes_energy_above_its_cutoff() -> None:
    x = white()
    for severity in SEVERITIES:
        y, cutoff = corrupt("low_pass", x, severity), LOW[severity - 1]
        assert abs(band_gain_db(x, y, 20, cutoff / 2)) < 0.5
        assert band_gain_db(x, y, min(1.5 * cutoff, (cutoff + SR / 2) / 2), SR / 2) < -20


def test_band_pass_keeps_its_band_only() -> None:
    x = white()
    for severity in SEVERITIES:
        y, (low, high) = corrupt("band_pass", x, severity), BAND[severity - 1]
        centre = np.sqrt(low * high)
        assert abs(band_gain_db(x, y, centre / 1.1, centre * 1.1)) < 3
        assert band_gain_db(x, y, 2, low / 2) < -20
        if 2 * high < SR / 2:
            assert band_gain_db(x, y, 2 * high, SR / 2) < -20


def test_time_mask_silences_the_stated_share_in_one_gap() -> None:
    x = sines()
    assert not np.any(x == 0)
    for severity in SEVERITIES:
        y = corrupt("time_mask", x, severity)
        silent = np.flatnonzero(y == 0)
        assert silent.size == int(x.size * MASK[severity - 1])
        assert np.all(np.diff(silent) == 1)  # one gap
        np.testing.assert_array_equal(np.delete(y, silent), np.delete(x, silent))


def strength(name: str, x: np.ndarray, y: np.ndarray) -> float:
    """How much ``y`` departs from ``x``, in the corruption's own terms."""
    if name == "clipping":
        return float(np.mean(y != x))
    if name == "time_mask":
        return float(np.mean(y == 0))
    if name in ("low_pass", "band_pass"):
        return -band_gain_db(x, y, 2, SR / 2)  # energy removed, dB
    return float(np.mean((y.astype(np.float64) - x) ** 2))  # noise power added


@pytest.mark.parametrize("name", LIBRARY + NOISES)
def test_higher_severity_is_stronger(name: str, recordings: Path) -> None:
    x = white() if name in ("low_pass", "band_pass") else sines()
    context = {"recordings": recordings} if name in NOISES else {}
    values = [strength(name, x, corrupt(name, x, s, **context)) for s in SEVERITIES]
    assert all(b > a for a, b in zip(values, values[1:], strict=False)), values


@pytest.mark.parametrize("name", LIBRARY)
def test_deterministic_per_seed_and_leaves_global_generators(name: str) -> None:
    x = sines(0.5)
    random.seed(11)
    np.random.seed(11)
    before = random.getstate(), np.random.get_state()[1].copy()
    a, b, c = corrupt(name, x, 4, seed=5), corrupt(name, x, 4, seed=5), corrupt(name, x, 4, seed=6)
    assert random.getstate() == before[0]
    np.testing.assert_array_equal(np.random.get_state()[1], before[1])
    np.testing.assert_array_equal(a, b)
    assert (not np.array_equal(a, c)) == (name in STOCHASTIC)


@pytest.mark.parametrize("name", LIBRARY + NOISES)
def test_shape_dtype_and_severity_range(name: str, recordings: Path) -> None:
    context = {"recordings": recordings} if name in NOISES else {}
    x = sines(0.5)
    for dtype in (np.float32, np.float64):
        y = corrupt(name, x.astype(dtype), 5, **context)
        assert (y.shape, y.dtype) == (x.shape, dtype)
        assert np.all(np.abs(y) <= 1)
    assert corrupt(name, x[:0], 3, **context).shape == (0,)
    for severity in (0, 6, -1):
        with pytest.raises(ValueError, match="severity"):
            corrupt(name, x, severity, **context)


def test_environment_is_reads_mix(recordings: Path) -> None:
    from scipy.signal import resample_poly

    x = sines()
    for name in NOISES:
        data, rate = sf.read(recordings / f"{name}.wav", dtype="float32", always_2d=True)
        noise = data.mean(1)
        if rate != SR:
            noise = resample_poly(noise, SR // rate, 1).astype(np.float32)
        tiled = np.resize(noise, x.size)  # from the start, repeated or cut
        for severity in SEVERITIES:
            y = corrupt(name, x, severity, seed=severity, recordings=recordings)
            expected = np.clip(x + 10 ** (GAIN_DB[severity - 1] / 20) * tiled.astype(np.float64), -1, 1)
            np.testing.assert_allclose(y, expected, atol=1e-6)
            if name != "wind":  # wind's channels cancel: nothing added
                gain = 10 * np.log10(np.mean((y.astype(np.float64) - x) ** 2) / np.mean(tiled.astype(np.float64) ** 2))
                assert gain == pytest.approx((1, 2, 4, 6, 8)[severity - 1], abs=0.01)


def test_environment_reads_the_folder_from_the_environment(recordings: Path, monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    x = sines(0.5)
    monkeypatch.setenv(RECORDINGS_ENV, str(recordings))
    np.testing.assert_array_equal(corrupt("rain", x, 2), corrupt("rain", x, 2, recordings=recordings))


def test_environment_without_recordings_fails_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RECORDINGS_ENV, raising=False)
    x = sines(0.5)
    (tmp_path / "empty").mkdir()
    (tmp_path / "other").mkdir()
    sf.write(tmp_path / "other" / "rain.wav", np.zeros(100), SR)
    cases = [({}, f"recordings=<folder> or set ${RECORDINGS_ENV}"), ({"recordings": tmp_path / "no"}, "does not exist"),
             ({"recordings": tmp_path / "empty"}, "is empty"), ({"recordings": tmp_path / "other"}, "has no crowd.wav")]
    for context, words in cases:
        with pytest.raises(DataPathError) as info:
            corrupt("crowd", x, 1, **context)
        assert words in str(info.value) and "\n" not in str(info.value) and "crowd.wav" in str(info.value)


def test_importing_them_does_not_import_audiomentations() -> None:
    code = ("import sys, uvav.corruptions.audio_noise, uvav.corruptions.audio_signal, "
            "uvav.corruptions.audio_environment; "
            "print(sorted(m for m in ('audiomentations', 'librosa', 'numba', 'scipy.signal', 'soundfile') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
