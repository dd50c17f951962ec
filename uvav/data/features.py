"""Feature extraction shared by the real-data loaders: decoding files, and what the feature store is keyed on.

Audio follows CAV-MAE (docs/facts.md §2): WAV -> its first channel (CAV-MAE's preparation: ``sox ... remix 1``)
-> 16 kHz -> minus its mean -> Kaldi fbank -> pad/crop to ``target_length`` frames ``[T, F]``. Images: RGB, then
torchvision's ``Resize(S, bicubic)`` + ``CenterCrop(S)`` on the PIL image (CAV-MAE's transforms), ``uint8 [3, S,
S]``, turned into ImageNet-normalised floats when a sample is read. The decoded, *unnormalised*
features of a dataset live in an on-disk store (:mod:`uvav.data.store`) named by a hash of every source file
(path, size, mtime) and every feature setting (:func:`cache_key`).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import soundfile as sf
import torch
import torchaudio
from PIL import Image
from torchvision.transforms import CenterCrop, InterpolationMode, Resize

from uvav.errors import ConfigError, UserError

if TYPE_CHECKING:
    from uvav.data.corrupting import SourceCorruption

# bump whenever decoding changes, so that old caches are not reused. 2: first channel, torchvision's resize/crop
FEATURE_VERSION = 2
SAMPLE_RATE = 16000
WINDOW_SAMPLES = 400  # one 25 ms Kaldi window at 16 kHz
MAX_SAMPLE_RATE = 384_000  # the highest common audio rate; a larger one is a corrupt header
FBANK_KWARGS: dict[str, Any] = {
    "htk_compat": True, "sample_frequency": SAMPLE_RATE, "use_energy": False, "window_type": "hanning",
    "dither": 0.0, "frame_shift": 10.0, "frame_length": 25.0,
}
CAVMAE_MEAN, CAVMAE_STD = -5.081, 4.4849
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_CACHE_DIR = ".cache/uvav/features"
NORMALIZE_MODES = ("train", "cavmae")
STORE_DTYPES = ("float16", "float32")  # data.store_dtype: the stored fbank's precision
AUDIO_CHANNEL = "first"  # of a multichannel file, as CAV-MAE's preparation (sox remix 1); recorded per store
IMAGE_RESIZE = "torchvision Resize(S, bicubic) + CenterCrop(S)"


# ---------------------------------------------------------------- audio
def read_wav(path: str | Path) -> tuple[torch.Tensor, int]:
    """Decode a WAV with soundfile: float32 ``[channels, samples]`` and the sample rate. A file soundfile cannot
    decode, with non-finite samples or a sample rate outside 1 Hz .. ``MAX_SAMPLE_RATE`` raises
    :class:`DecodeError` naming it."""
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, ValueError, TypeError, OSError, EOFError) as exc:  # sf.LibsndfileError is a RuntimeError
        raise decode_failure(path, exc) from exc
    wave = torch.from_numpy(np.ascontiguousarray(data.T))
    problem = ("non-finite samples" if not torch.isfinite(wave).all() else
               f"sample rate {rate} Hz outside 1 .. {MAX_SAMPLE_RATE}" if not 0 < rate <= MAX_SAMPLE_RATE else None)
    if problem:  # a corrupt header's rate would make resampling's filter huge
        exc = ValueError(problem)
        raise decode_failure(path, exc) from exc
    return wave, int(rate)


def to_mono_16k(wave: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """The first channel (CAV-MAE's ``sox ... remix 1``; every decoded dataset), resampled to 16 kHz with
    torchaudio's defaults (what CAV-MAE's ``ffmpeg -ar 16000`` preparation gives within 1e-4): ``[samples]``."""
    mono = wave[0] if wave.dim() == 2 else wave
    if sample_rate != SAMPLE_RATE and mono.numel() > 0:
        mono = torchaudio.functional.resample(mono, orig_freq=sample_rate, new_freq=SAMPLE_RATE)
    return mono


def add_white_noise(wave: torch.Tensor, snr_db: float, seed: int) -> torch.Tensor:
    """Mix in Gaussian white noise at ``snr_db`` relative to the signal's power (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    power = wave.pow(2).mean() if wave.numel() else torch.tensor(0.0)
    noise = torch.randn(wave.shape, generator=gen) * torch.sqrt(power / 10 ** (snr_db / 10))
    return wave + noise


def fbank(wave: torch.Tensor, target_length: int, num_mel_bins: int) -> tuple[torch.Tensor, bool]:
    """Kaldi fbank of a 16 kHz mono waveform, padded with zeros / cropped to ``[target_length, F]``.

    Returns the features and whether the waveform was shorter than one window (and so zero-padded to it).
    """
    wave = wave - wave.mean() if wave.numel() else wave
    short = wave.numel() < WINDOW_SAMPLES
    if short:
        wave = torch.nn.functional.pad(wave, (0, WINDOW_SAMPLES - wave.numel()))
    feats = torchaudio.compliance.kaldi.fbank(wave[None], num_mel_bins=num_mel_bins, **FBANK_KWARGS)
    frames = feats.shape[0]
    if frames < target_length:
        feats = torch.nn.functional.pad(feats, (0, 0, 0, target_length - frames))
    return feats[:target_length].contiguous(), short


def audio_features(
    path: str | Path, target_length: int, num_mel_bins: int, snr_db: float | None = None, noise_seed: int = 0,
    corruption: SourceCorruption | None = None,
) -> tuple[torch.Tensor, bool]:
    """WAV file -> ``([T, F] fbank, padded_short)``; optional white noise at ``snr_db`` (at 16 kHz), then the
    ``corruption`` of the 16 kHz waveform. Samples so large that the features overflow raise :class:`DecodeError`
    naming the file."""
    wave = to_mono_16k(*read_wav(path))
    if snr_db is not None:
        wave = add_white_noise(wave - wave.mean(), snr_db, noise_seed)
    if corruption is not None:
        wave = corruption.waveform(wave, Path(path).name, SAMPLE_RATE)
    features, short = fbank(wave, target_length, num_mel_bins)
    if not torch.isfinite(features).all():
        exc = ValueError(f"non-finite features (samples up to {wave.abs().max().item():.3g})")
        raise decode_failure(path, exc) from exc
    return features, short


def clip_seed(seed: int, name: str) -> int:
    """A per-file seed that does not depend on Python's salted ``hash``."""
    return zlib.crc32(f"{seed}:{name}".encode())


# ---------------------------------------------------------------- images
# what PIL raises on a corrupt file (OSError includes UnidentifiedImageError; SyntaxError: broken PNG chunks)
IMAGE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError)


def _rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB; 16-bit / float greyscale is scaled to 8 bits first."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        arr = np.asarray(img, dtype=np.float32)
        if arr.max(initial=0.0) > 255:
            arr = arr / 257.0
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    return img.convert("RGB")


def image_to_uint8(img: Image.Image, image_size: int) -> torch.Tensor:
    """CAV-MAE's image transforms, torchvision's ``Resize(S, bicubic)`` (shorter side to ``S``, long side
    truncated) and ``CenterCrop(S)`` (offsets rounded), on the RGB image: ``uint8 [3, S, S]``. Greyscale and
    16-bit images are converted to RGB first (CAV-MAE does not convert: a greyscale JPEG breaks there)."""
    img = CenterCrop(image_size)(Resize(image_size, interpolation=InterpolationMode.BICUBIC)(_rgb(img)))
    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).contiguous()


def load_image(path: str | Path, image_size: int, corruption: SourceCorruption | None = None) -> torch.Tensor:
    """Open and fully decode an image file: ``uint8 [3, S, S]`` (then the ``corruption`` of that frame). A corrupt,
    truncated or oversized file (PIL's decompression-bomb limit) raises :class:`DecodeError` naming it."""
    try:
        with Image.open(path) as img:
            img.load()
            image = image_to_uint8(img, image_size)
    except IMAGE_ERRORS as exc:
        raise decode_failure(path, exc) from exc
    return image if corruption is None else corruption.image(image, Path(path).name)


def images_to_float(images: torch.Tensor) -> torch.Tensor:
    """``uint8 [N, 3, H, W]`` -> float32 normalised with ImageNet mean/std."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return images.float().div_(255.0).sub_(mean).div_(std)


# ---------------------------------------------------------------- decoding files
class BadFileError(UserError, ValueError):
    """A dataset file that is missing its partner, misplaced or unreadable (``data.on_bad_file=error``)."""


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run small per-file tensor ops on one intra-op thread: with more, a busy machine made decoding ~10x
    slower (thread oversubscription), and an idle one gained nothing."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class DecodeError(UserError):
    """A file whose decoding failed: names it (and the reason, when given); the cause is chained."""

    def __init__(self, path: str | Path, reason: str | None = None) -> None:
        super().__init__(f"{path}: {reason}" if reason else str(path))
        self.path = str(path)


def decode_failure(path: str | Path, exc: BaseException) -> DecodeError:
    """The :class:`DecodeError` for ``path`` failing with ``exc`` (raise it ``from exc``)."""
    return DecodeError(path, f"cannot decode: {type(exc).__name__}: {exc}")


def decode_at(path: str | Path, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(path, *args)``; any failure is re-raised as :class:`DecodeError` naming ``path`` (a reader's own
    :class:`DecodeError` as it is)."""
    try:
        return fn(path, *args)
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError(path) from exc


def decode_files(
    item: tuple[Any, ...], target_length: int, num_mel_bins: int, image_size: int,
    corruption: SourceCorruption | None = None,
) -> tuple[torch.Tensor, bool, torch.Tensor]:
    """Decode an item whose first two fields are a WAV and an image path (or a sequence of frame paths):
    ``(fbank [T, F], short, uint8 [3, S, S] or [frames, 3, S, S])``, under ``corruption`` if given. A failure
    raises :class:`DecodeError` naming the file."""
    fb, short = decode_at(item[0], audio_features, target_length, num_mel_bins, None, 0, corruption)
    if isinstance(item[1], (str, Path)):
        return fb, short, decode_at(item[1], load_image, image_size, corruption)
    return fb, short, torch.stack([decode_at(p, load_image, image_size, corruption) for p in item[1]])


def bad_file(path: str | Path, reason: str, on_bad_file: str, skipped: list[dict[str, str]]) -> None:
    """Raise :class:`BadFileError` for ``path``, or record it in ``skipped`` if ``on_bad_file == "skip"``."""
    if on_bad_file != "skip":
        raise BadFileError(f"{path}: {reason} (set data.on_bad_file=skip to skip such files)")
    skipped.append({"path": str(path), "reason": reason})


# ---------------------------------------------------------------- what a feature store depends on
def resolve_cache_dir(cache_dir: str | Path | None, cfg: Any) -> Path:
    """The ``cache_dir`` argument, else ``cfg.cache_dir``, else :data:`DEFAULT_CACHE_DIR`."""
    return Path(cache_dir or getattr(cfg, "cache_dir", None) or DEFAULT_CACHE_DIR)


def feature_settings(cfg: Any, **extra: Any) -> dict[str, Any]:
    """Every setting the stored features depend on (plus dataset-specific ``extra``)."""
    return {
        "version": FEATURE_VERSION, "sample_rate": SAMPLE_RATE, "fbank": FBANK_KWARGS,
        "target_length": int(cfg.target_length), "num_mel_bins": int(cfg.num_mel_bins),
        "image_size": int(cfg.image_size), "image_resize": IMAGE_RESIZE, "audio_channel": AUDIO_CHANNEL,
        "store_dtype": str(getattr(cfg, "store_dtype", "float16")), **extra,
    }


def features_info(settings: dict[str, Any]) -> dict[str, Any]:
    """What a run records of its feature settings (``data_info.features``)."""
    keys = ("version", "sample_rate", "target_length", "num_mel_bins", "image_size", "fbank", "image_resize",
            "audio_channel", "store_dtype")
    return {k: settings[k] for k in keys}


def cache_key(sources: Sequence[str | Path], settings: dict[str, Any]) -> str:
    """sha256 over each source's absolute path, size and mtime, and the JSON of ``settings``."""
    h = hashlib.sha256()
    for src in sources:
        st = os.stat(src)
        h.update(f"{os.path.abspath(src)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()


# ---------------------------------------------------------------- splits
def check_decoded_settings(cfg: Any) -> None:
    """The choices every decoded dataset's config has (``data.normalize``, ``data.on_bad_file``), checked before
    any decoding."""
    check_choice("data.normalize", cfg.normalize, NORMALIZE_MODES)
    check_choice("data.on_bad_file", cfg.on_bad_file, ("error", "skip"))
    check_choice("data.store_dtype", getattr(cfg, "store_dtype", "float16"), STORE_DTYPES)


def check_choice(key: str, value: Any, allowed: Sequence[Any]) -> None:
    """Fail early (before any decoding) on a setting outside ``allowed``."""
    if value not in allowed:
        raise ConfigError(f"{key}={value!r}: one of {list(allowed)}")


def split_digest(names: Sequence[str], index: torch.Tensor) -> str:
    """A short fingerprint of which files a split holds (sha256 of their sorted names)."""
    picked = sorted(names[i] for i in index.tolist())
    return hashlib.sha256("\n".join(picked).encode()).hexdigest()[:16]
