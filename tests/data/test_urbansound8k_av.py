"""UrbanSound8K-AV loader on a tiny generated dataset in the exact layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import uvav.data.features as features
from uvav.checks import register_configs
from uvav.config import config_dir
from uvav.data import load_data
from uvav.data.features import BadFileError
from uvav.data.urbansound8k_av import CLASS_NAMES, SOUND_DIR, VISION_DIR, UrbanSound8KAVDataConfig, split_folds

from .conftest import make_us8k, stack, write_tone

PER_CLASS = 4


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, list[str]]:
    root = tmp_path / "us8k"
    return root, make_us8k(root, PER_CLASS)


def config(root: Path, tmp_path: Path, **kw):
    base = dict(root=str(root), target_length=64, num_mel_bins=32, image_size=32,
                cache_dir=str(tmp_path / "cache"))
    return OmegaConf.structured(UrbanSound8KAVDataConfig(**{**base, **kw}))


def write_metadata(path: Path, stems: list[str]) -> Path:
    rows = [{"slice_file_name": f"{s}.wav", "fold": int(s.split("-")[-1]) + 1, "classID": int(s.split("-")[1])}
            for s in stems]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_stratified_split_shapes_and_info(dataset, tmp_path: Path) -> None:
    root, _ = dataset
    data = load_data(config(root, tmp_path))
    # per class: round(0.3 * 4) = 1 test; of the other 3, max(1, round(0.15 * 3)) = 1 val
    assert data.sizes() == {"train": 20, "val": 10, "test": 10}
    assert data.class_names == CLASS_NAMES and data.num_classes == 10
    assert data.info["audio_shape"] == [64, 32] and data.info["visual_shape"] == [3, 32, 32]
    for part in (data.train, data.val, data.test):
        audio, visual = stack(part)
        assert audio.shape[1:] == (64, 32) and visual.shape[1:] == (3, 32, 32)
        assert torch.isfinite(audio).all() and audio.dtype == visual.dtype == torch.float32
    assert data.info["class_counts"]["test"] == [1] * 10
    assert data.info["split"]["kind"] == "stratified" and data.info["skipped_files"] == []
    norm, train_audio = data.info["normalization"], stack(data.train)[0]
    assert norm["audio"] == "train" and abs(train_audio.mean()) < 1e-4
    assert train_audio.std() == pytest.approx(1.0, abs=1e-3)
    # 0.01 s clips (every third) and the empty one were padded to one window
    assert any("100005-1-0-1.wav" in p for p in data.info["short_audio_padded"])
    assert len(data.info["short_audio_padded"]) >= 10


def test_split_is_seeded(dataset, tmp_path: Path) -> None:
    root, _ = dataset
    a = load_data(config(root, tmp_path, seed=0)).info["split_digest"]
    b = load_data(config(root, tmp_path, seed=0)).info["split_digest"]
    c = load_data(config(root, tmp_path, seed=1)).info["split_digest"]
    assert a == b and a != c


def test_cavmae_normalisation(dataset, tmp_path: Path) -> None:
    root, _ = dataset
    data = load_data(config(root, tmp_path, normalize="cavmae"))
    assert (data.info["normalization"]["audio_mean"], data.info["normalization"]["audio_std"]) == (-5.081, 4.4849)


def test_folds_split(dataset, tmp_path: Path) -> None:
    root, stems = dataset
    csv = write_metadata(tmp_path / "UrbanSound8K.csv", stems)
    data = load_data(config(root, tmp_path, split="folds", metadata_csv=str(csv), test_folds=[1, 2]))
    assert data.sizes() == {"train": 10, "val": 10, "test": 20}
    assert data.info["split"] == {"kind": "folds", "metadata_csv": str(csv), "test_folds": [1, 2],
                                  "val_fraction": 0.15, "seed": 0}
    # exactly the clips of folds 1-2 are test
    files = [f"x/{s}.wav" for s in stems]
    labels = torch.tensor([int(s.split("-")[1]) for s in stems])
    parts = split_folds(files, labels, config(root, tmp_path, metadata_csv=str(csv), test_folds=[1, 2]), [])
    assert sorted(int(stems[i].split("-")[-1]) for i in parts["test"]) == [0] * 10 + [1] * 10
    assert set(parts["train"].tolist()) | set(parts["val"].tolist()) | set(parts["test"].tolist()) == set(range(40))


def test_folds_need_metadata_and_match_it(dataset, tmp_path: Path) -> None:
    root, stems = dataset
    with pytest.raises(ValueError, match="metadata_csv"):
        load_data(config(root, tmp_path, split="folds"))
    csv = write_metadata(tmp_path / "meta.csv", stems[1:])  # the first clip is not listed
    with pytest.raises(BadFileError, match=stems[0]):
        load_data(config(root, tmp_path, split="folds", metadata_csv=str(csv), test_folds=[1]))
    data = load_data(config(root, tmp_path, split="folds", metadata_csv=str(csv), test_folds=[1],
                            on_bad_file="skip"))
    assert sum(data.sizes().values()) == 39
    assert [s["path"].endswith(f"{stems[0]}.wav") for s in data.info["skipped_files"]] == [True]


def corrupt(root: Path, stems: list[str], case: str) -> Path:
    """Damage the dataset one way; returns the file or folder the error must name."""
    cls = CLASS_NAMES[2]
    if case == "audio_without_image":
        target = root / SOUND_DIR / cls / "lonely.wav"
        write_tone(target, 8000, 0.2)
    elif case == "image_without_audio":
        target = next((root / VISION_DIR / cls).iterdir())
        (root / SOUND_DIR / cls / f"{target.stem}.wav").unlink()
    elif case == "unknown_class":
        target = root / SOUND_DIR / "motorbike"
        write_tone(target / "a.wav", 8000, 0.2)
    elif case == "empty_class":  # both folders of the class emptied; the sound one is reported first
        for top in (VISION_DIR, SOUND_DIR):
            target = root / top / CLASS_NAMES[9]
            shutil.rmtree(target)
            target.mkdir()
    elif case == "corrupt_wav":
        target = root / SOUND_DIR / cls / f"{stems[9]}.wav"
        target.write_bytes(b"RIFF\x00\x00garbage" * 10)
    else:  # truncated image
        target = next(p for p in (root / VISION_DIR / cls).iterdir() if p.suffix == ".jpg")
        target.write_bytes(target.read_bytes()[:200])
    return target


CASES = ["audio_without_image", "image_without_audio", "unknown_class", "empty_class", "corrupt_wav",
         "corrupt_image"]
# (pairs lost, skipped entries) per case: an empty class loses its 4 pairs and lists both folders
EFFECT = {"audio_without_image": (0, 1), "image_without_audio": (1, 1), "unknown_class": (0, 1),
          "empty_class": (4, 2), "corrupt_wav": (1, 1), "corrupt_image": (1, 1)}


@pytest.mark.parametrize("case", CASES)
def test_bad_files_error_or_skip(dataset, tmp_path: Path, case: str) -> None:
    root, stems = dataset
    target = corrupt(root, stems, case)
    with pytest.raises(BadFileError, match=str(target.name)) as err:
        load_data(config(root, tmp_path))
    assert str(target) in str(err.value)
    data = load_data(config(root, tmp_path, on_bad_file="skip"))
    lost, listed = EFFECT[case]
    assert sum(data.sizes().values()) == 40 - lost
    assert len(data.info["skipped_files"]) == listed
    assert str(target) in [s["path"] for s in data.info["skipped_files"]]
    assert all(s["reason"] for s in data.info["skipped_files"])


def test_missing_root_shows_layout(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="Dataset_v3_sound/<class>/<name>.wav"):
        load_data(config(tmp_path / "nowhere", tmp_path))
    with pytest.raises(FileNotFoundError, match="data.root is not set"):
        load_data(OmegaConf.structured(UrbanSound8KAVDataConfig()))


def test_cache_hit_skips_decoding(dataset, tmp_path: Path, monkeypatch) -> None:
    root, _ = dataset
    first = load_data(config(root, tmp_path, num_workers=0))
    calls = []
    real = features.audio_features

    def counting(*args, **kw):
        calls.append(args[0])
        return real(*args, **kw)

    monkeypatch.setattr(features, "audio_features", counting)
    second = load_data(config(root, tmp_path, num_workers=0))
    assert calls == [] and second.info["store"]["hit"] and not first.info["store"]["hit"]
    assert second.info["cache"] == {"path": first.info["store"]["path"], "hit": True}
    assert first.info["store"]["items"] == 40 and first.info["store"]["bytes"] > 40 * 64 * 32 * 2
    assert torch.equal(stack(first.train)[0], stack(second.train)[0])
    assert torch.equal(stack(first.test)[1], stack(second.test)[1])
    changed = load_data(config(root, tmp_path, target_length=48, num_workers=0))  # a feature setting changed
    assert len(calls) == 40 and not changed.info["store"]["hit"] and changed.train.sample(0)[0].shape[0] == 48
    load_data(config(root, tmp_path, split="stratified", test_fraction=0.5))  # split-only change: stored
    assert len(calls) == 40


def test_hydra_composition(dataset, tmp_path: Path) -> None:
    root, _ = dataset
    register_configs()
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=["data=urbansound8k_av", f"data.root={root}", "data.target_length=32",
                                           "data.num_mel_bins=32", "data.image_size=16",
                                           f"data.cache_dir={tmp_path / 'c'}"]).data
    data = load_data(cfg)
    audio, visual = data.train.sample(0)
    assert audio.shape == (32, 32) and visual.shape == (3, 16, 16)
