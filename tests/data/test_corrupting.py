"""Evaluation data under a registered corruption: applied to the validation and test clips' waveforms and frames
before features, training data and normalisation left clean, the same draws on every load, its own store, and one
clear line for a request that cannot be met."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from uvav.corruptions import CORRUPTIONS, register
from uvav.data import load_data
from uvav.data.synthetic import SyntheticDataConfig
from uvav.data.urbansound8k_av import UrbanSound8KAVDataConfig
from uvav.errors import ConfigError

from .conftest import make_us8k, stack


@register("test_inverted", "visual", "test")
def inverted(image: np.ndarray, severity: int, rng: np.random.RandomState) -> np.ndarray:
    """Negative image, plus one random pixel set to the severity (draws from rng)."""
    out = 255 - image
    out[rng.randint(image.shape[0]), rng.randint(image.shape[1])] = severity
    return out


@register("test_quieter", "audio", "test")
def quieter(wave: np.ndarray, severity: int, rng: np.random.RandomState, sample_rate: int) -> np.ndarray:
    """The waveform at 1 / (1 + severity) of its amplitude plus a little seeded noise."""
    assert sample_rate == 16000
    return (wave / (1 + severity) + 1e-3 * rng.standard_normal(wave.shape)).astype(wave.dtype)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("us8k")
    make_us8k(folder, per_class=3)
    return folder


def config(root: Path, cache: Path, **kw):
    return OmegaConf.structured(UrbanSound8KAVDataConfig(
        root=str(root), target_length=32, num_mel_bins=16, image_size=16, cache_dir=str(cache), num_workers=0,
        split="stratified", test_fraction=0.3, **kw))


def test_only_validation_and_test_clips_are_corrupted_normalised_as_the_clean_training_split(root, tmp_path):
    clean = load_data(config(root, tmp_path))
    visual = load_data(config(root, tmp_path, visual_corruption="test_inverted", corruption_severity=2))
    audio = load_data(config(root, tmp_path, audio_corruption="test_quieter"))
    for data in (visual, audio):
        assert torch.equal(stack(data.train)[0], stack(clean.train)[0])  # training clips: the clean store's
        assert data.info["normalization"] == clean.info["normalization"]
        assert data.info["content_digest"] != clean.info["content_digest"]
    for split in ("val", "test"):
        (a_clean, v_clean), (a_vis, v_vis), (a_aud, v_aud) = (stack(getattr(d, split)) for d in (clean, visual, audio))
        assert torch.equal(a_vis, a_clean) and torch.equal(v_aud, v_clean)  # the other modality untouched
        # a negative image: x + x' is constant per channel after normalisation, but for one pixel
        total = v_vis + v_clean
        assert torch.isclose(total, total[:, :, :1, :1], atol=1e-5).float().mean() > 0.99
        assert a_aud.mean() < a_clean.mean()  # quieter: lower log mel energies
    assert visual.info["corruption"]["visual"] == "test_inverted" and visual.info["corruption"]["severity"] == 2


def test_the_draws_are_fixed_by_the_data_seed_and_the_file_not_the_run(root, tmp_path):
    first = load_data(config(root, tmp_path / "a", visual_corruption="test_inverted"))
    again = load_data(config(root, tmp_path / "b", visual_corruption="test_inverted"))  # decoded anew elsewhere
    other_seed = load_data(config(root, tmp_path / "a", visual_corruption="test_inverted", seed=1))
    assert not again.info["corruption"]["store"]["hit"]
    assert torch.equal(stack(first.test)[1], stack(again.test)[1])
    assert first.info["corruption"]["store"]["path"] != other_seed.info["corruption"]["store"]["path"]
    severe = load_data(config(root, tmp_path / "a", visual_corruption="test_inverted", corruption_severity=5))
    assert severe.info["content_digest"] != first.info["content_digest"]


@pytest.mark.parametrize(("overrides", "message"), [
    ({"visual_corruption": "no_such"}, r"data.visual_corruption='no_such': one of \[.*'test_inverted'"),
    ({"visual_corruption": "test_quieter"}, r"data.visual_corruption='test_quieter': one of"),  # an audio one
    ({"audio_corruption": "test_quieter", "corruption_severity": 0}, r"data.corruption_severity=0: one of \[1, 2"),
])
def test_a_corruption_that_cannot_be_applied_is_refused_in_one_line(root, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_data(config(root, tmp_path, **overrides))
    assert "\n" not in str(err.value)
    assert not list(tmp_path.glob("*")), "refused before any decoding"


def test_generated_data_has_nothing_to_corrupt():
    cfg = OmegaConf.structured(SyntheticDataConfig(visual_corruption="test_inverted"))
    with pytest.raises(ConfigError, match="generated, with no waveform or image to corrupt"):
        load_data(cfg)


def test_every_registered_corruption_keeps_shape_and_dtype_and_refuses_other_severities():
    rng = np.random.RandomState(0)
    image = rng.randint(0, 256, (20, 24, 3)).astype(np.uint8)
    with pytest.raises(ValueError, match="severity 6"):
        CORRUPTIONS.get("test_inverted")(image, 6, rng)
    assert CORRUPTIONS.get("test_inverted")(image, 1, rng).shape == image.shape
