"""Audio and image features, and what the feature store is keyed on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio
from PIL import Image

from uvav.data import features as F
from uvav.data.features import (
    DecodeError,
    audio_features,
    cache_key,
    decode_files,
    image_to_uint8,
    images_to_float,
    load_image,
    resolve_cache_dir,
)

from .conftest import write_tone


def reference_fbank(wave_16k: torch.Tensor, frames: int, mel: int) -> torch.Tensor:
    """CAV-MAE's recipe written out directly (docs/facts.md §2)."""
    wave = wave_16k - wave_16k.mean()
    fb = torchaudio.compliance.kaldi.fbank(
        wave[None], htk_compat=True, sample_frequency=16000, use_energy=False, window_type="hanning",
        num_mel_bins=mel, dither=0.0, frame_shift=10)
    fb = torch.nn.functional.pad(fb, (0, 0, 0, max(0, frames - fb.shape[0])))
    return fb[:frames]


def test_16k_mono_matches_reference_exactly(tmp_path: Path) -> None:
    t = torch.arange(16000) / 16000
    wave = (0.3 * torch.sin(2 * torch.pi * 700 * t) + 0.05).float()
    sf.write(tmp_path / "a.wav", wave.numpy(), 16000, subtype="FLOAT")
    feats, short = audio_features(tmp_path / "a.wav", 128, 64)
    assert not short and feats.shape == (128, 64)
    torch.testing.assert_close(feats, reference_fbank(wave, 128, 64))


@pytest.mark.parametrize("rate", [8000, 22050, 44100])
def test_resampled_stereo_matches_reference(tmp_path: Path, rate: int) -> None:
    """A stereo file at another rate gives the fbank of its first channel's tone made directly at 16 kHz (CAV-MAE's
    preparation keeps the first channel: ``sox ... remix 1``)."""
    n = rate  # 1 s
    t = np.arange(n) / rate
    tone = 0.4 * np.sin(2 * np.pi * 1000 * t)
    other = 0.4 * np.sin(2 * np.pi * 3000 * t)  # the channel mean would show a second peak
    sf.write(tmp_path / "s.wav", np.stack([tone, other], 1).astype(np.float32), rate, subtype="FLOAT")
    feats, _ = audio_features(tmp_path / "s.wav", 100, 64)  # the first channel: the 1 kHz tone alone
    ref = reference_fbank(torch.from_numpy(0.4 * np.sin(2 * np.pi * 1000 * np.arange(16000) / 16000)).float(),
                          100, 64)
    inner = slice(3, 95)  # the resampling filter's edges differ
    loud = ref[inner] > ref[inner].max() - 20  # bins within 20 (log) of the peak: the tone and its skirt
    assert (feats[inner].argmax(1) == ref[inner].argmax(1)).all()
    assert (feats[inner][loud] - ref[inner][loud]).abs().max() < 0.05


def test_pad_crop_and_short_audio(tmp_path: Path) -> None:
    write_tone(tmp_path / "long.wav", 16000, 2.0)
    write_tone(tmp_path / "short.wav", 16000, 0.3)
    write_tone(tmp_path / "tiny.wav", 8000, 0.01)  # 160 samples at 16 kHz < one 400-sample window
    write_tone(tmp_path / "empty.wav", 22050, 0.0)
    long, s_long = audio_features(tmp_path / "long.wav", 64, 32)
    short, s_short = audio_features(tmp_path / "short.wav", 64, 32)
    assert long.shape == short.shape == (64, 32) and not s_long and not s_short
    assert (long != 0).all() and (short[28:] == 0).all() and (short[:28] != 0).all()  # 1 + (4800-400)//160
    for name in ("tiny.wav", "empty.wav"):
        feats, was_short = audio_features(tmp_path / name, 64, 32)
        assert was_short and feats.shape == (64, 32) and torch.isfinite(feats).all()
        assert (feats[1:] == 0).all()  # one frame from the padded window, then zero padding


def test_noise_is_seeded(tmp_path: Path) -> None:
    write_tone(tmp_path / "a.wav", 8000, 0.5)
    clean, _ = audio_features(tmp_path / "a.wav", 32, 32)
    a, _ = audio_features(tmp_path / "a.wav", 32, 32, snr_db=0.0, noise_seed=1)
    b, _ = audio_features(tmp_path / "a.wav", 32, 32, snr_db=0.0, noise_seed=1)
    c, _ = audio_features(tmp_path / "a.wav", 32, 32, snr_db=0.0, noise_seed=2)
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, clean)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "RGB"])
def test_image_modes(mode: str) -> None:
    base = Image.fromarray(np.full((20, 30, 3), 200, dtype=np.uint8))
    if mode == "I;16":  # 16-bit greyscale: 51400 / 257 = 200
        img = Image.fromarray(np.full((20, 30), 51400, np.uint16))
    elif mode == "P":
        img = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    else:
        img = base.convert(mode)
    out = image_to_uint8(img, 16)
    assert out.shape == (3, 16, 16) and out.dtype == torch.uint8
    assert (out.float() - 200).abs().max() <= 1


def test_image_resize_shorter_side_then_centre_crop(tmp_path: Path) -> None:
    arr = np.zeros((10, 30, 3), dtype=np.uint8)  # left third red, middle green, right third blue
    arr[:, :10, 0] = arr[:, 10:20, 1] = arr[:, 20:, 2] = 255
    Image.fromarray(arr).save(tmp_path / "x.png")
    out = load_image(tmp_path / "x.png", 10)
    assert out.shape == (3, 10, 10)
    assert out[1, :, 2:8].min() == 255 and out[0, :, 2:8].max() == 0  # the crop is the green middle
    norm = images_to_float(torch.full((1, 3, 2, 2), 255, dtype=torch.uint8))
    torch.testing.assert_close(norm[0, :, 0, 0], (1 - torch.tensor(F.IMAGENET_MEAN)) / torch.tensor(F.IMAGENET_STD))


@pytest.mark.parametrize("size", [(640, 427), (640, 480), (300, 431), (224, 224), (24, 32)])
def test_images_go_through_torchvision_resize_and_centre_crop(size: tuple[int, int]) -> None:
    """CAV-MAE's transforms: the long side truncated (640x480 -> 298x224, not 299), crop offsets rounded."""
    from torchvision import transforms

    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    ref = transforms.Compose([transforms.Resize(224, interpolation=transforms.InterpolationMode.BICUBIC),
                              transforms.CenterCrop(224), transforms.PILToTensor()])(img)
    assert torch.equal(image_to_uint8(img, 224), ref)


def test_corrupt_image_raises(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "t.jpg")
    data = (tmp_path / "t.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(DecodeError, match="t.jpg: cannot decode: OSError") as err:
        load_image(tmp_path / "t.jpg", 8)
    assert isinstance(err.value.__cause__, OSError)


def test_decode_files_names_the_failing_file(tmp_path: Path) -> None:
    write_tone(tmp_path / "a.wav", 8000, 0.3)
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "a.png")
    fb, short, img = decode_files((tmp_path / "a.wav", tmp_path / "a.png"), 32, 16, 8)
    assert fb.shape == (32, 16) and not short and img.shape == (3, 8, 8) and img.dtype == torch.uint8
    (tmp_path / "b.png").write_bytes(b"not an image")
    with pytest.raises(DecodeError) as err:
        decode_files((tmp_path / "a.wav", tmp_path / "b.png"), 32, 16, 8)
    assert err.value.path == str(tmp_path / "b.png") and err.value.__cause__ is not None


def test_cache_dir_resolution() -> None:
    class Cfg:
        cache_dir = "from_cfg"

    assert resolve_cache_dir("arg", Cfg()) == Path("arg")
    assert resolve_cache_dir(None, Cfg()) == Path("from_cfg")
    Cfg.cache_dir = None
    assert resolve_cache_dir(None, Cfg()) == Path(".cache/uvav/features")


def test_cache_key_follows_sources_and_settings(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"abc")
    key = cache_key([src], {"target_length": 64})
    assert key == cache_key([src], {"target_length": 64}) and key != cache_key([src], {"target_length": 65})
    src.write_bytes(b"abcd")  # a source changed (size and mtime)
    assert cache_key([src], {"target_length": 64}) != key
