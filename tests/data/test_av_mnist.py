"""AV-MNIST-lite: pairing, manifest, splits and difficulty on a miniature copy; the real files when present."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import uvav.data.av_mnist as avm
from uvav.data import load_data
from uvav.data.av_mnist import (
    AVMnistDataConfig,
    ManifestError,
    find_data_root,
    image_pools,
    list_clips,
    load_mnist,
    manifest_pairs,
    read_idx,
)
from uvav.data.features import BadFileError

from .conftest import make_fake_av_mnist, stack


def config(root: Path | None, tmp_path: Path, **kw):
    base = dict(root=None if root is None else str(root), cache_dir=str(tmp_path / "cache"), target_length=64,
                num_mel_bins=32, image_size=32)
    return OmegaConf.structured(AVMnistDataConfig(**{**base, **kw}))


@pytest.fixture
def fake_root(tmp_path: Path) -> Path:
    return make_fake_av_mnist(tmp_path / "data")


def test_missing_files_message(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as err:
        load_data(config(tmp_path / "nowhere", tmp_path))
    msg = str(err.value)
    for needle in ("fsdd/recordings/*.wav", "mnist/t10k-images-idx3-ubyte.gz", "mnist/t10k-labels-idx1-ubyte.gz",
                   "Jakobovski/free-spoken-digit-dataset", "26eb9aaf76e81b692f806f9140c2d2777410d7a1",
                   "python -m uvav.prepare av_mnist --root DIR"):
        assert needle in msg


def test_root_from_environment(fake_root: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("UVAV_DATA_ROOT", str(fake_root))
    assert find_data_root(None) == fake_root
    assert load_data(config(None, tmp_path)).info["root"] == str(fake_root)


def test_idx_reader(fake_root: Path) -> None:
    images, labels = load_mnist(fake_root)
    assert images.shape == (200, 28, 28) and images.dtype == np.uint8 and labels.shape == (200,)
    bad = fake_root / "bad.gz"
    bad.write_bytes(b"\x1f\x8b" + b"x" * 10)
    with pytest.raises(Exception):  # noqa: B017 - gzip or format error
        read_idx(bad)


def test_loader_on_miniature(fake_root: Path, tmp_path: Path) -> None:
    data = load_data(config(fake_root, tmp_path))
    # 7 takes x 10 digits: takes 0-4 test (50); takes 5-6 train (20) -> 10 val (one per digit), 10 train
    assert data.sizes() == {"train": 10, "val": 10, "test": 50}
    assert data.class_names == [str(d) for d in range(10)]
    audio, visual = data.train.sample(0)
    assert audio.shape == (64, 32) and visual.shape == (3, 32, 32)
    info = data.info
    assert Path(info["manifest"]) == tmp_path / "cache" / "av_mnist_manifest_seed0.csv"
    assert not info["manifest_reused"] and not info["cache"]["hit"]
    again = load_data(config(fake_root, tmp_path))
    assert again.info["manifest_reused"] and again.info["cache"]["hit"]
    other = load_data(config(fake_root, tmp_path, test_image_fraction=0.5))  # other pools: its own manifest
    assert Path(other.info["manifest"]).name == "av_mnist_manifest_seed0_test0.5.csv"
    assert torch.equal(stack(again.test)[1], stack(data.test)[1])
    assert torch.equal(stack(again.train)[0], stack(data.train)[0])


def test_pairs_match_digits_and_pools(fake_root: Path, tmp_path: Path) -> None:
    clips = list_clips(fake_root, "error", [])
    images, labels = load_mnist(fake_root)
    pools = image_pools(labels, 0.3, 0)
    assert not set(pools["train"]) & set(pools["test"]) and len(pools["train"]) + len(pools["test"]) == 200
    pairs, reused = manifest_pairs(tmp_path / "m.csv", clips, labels, pools, 0)
    assert not reused
    for clip in clips:
        assert labels[pairs[clip.name]] == clip.digit
        assert pairs[clip.name] in set(pools[clip.split].tolist())
    assert len(set(pairs.values())) == len(pairs)  # distinct images while the pool lasts


def test_manifest_checked_on_reuse(fake_root: Path, tmp_path: Path) -> None:
    clips = list_clips(fake_root, "error", [])
    _, labels = load_mnist(fake_root)
    pools = image_pools(labels, 0.3, 0)
    path = tmp_path / "m.csv"
    manifest_pairs(path, clips, labels, pools, 0)
    rows = list(csv.DictReader(open(path)))
    # another seed's pools: the stored pairs no longer fall into the matching pool
    with pytest.raises(ManifestError, match="pool"):
        manifest_pairs(path, clips, labels, image_pools(labels, 0.3, 1), 1)
    wrong = [dict(r) for r in rows]
    other = next(i for i in pools["train"] if labels[i] != int(wrong[0]["label"]))
    wrong[0]["image_index"] = str(other)
    write_rows(path, wrong)
    with pytest.raises(ManifestError, match=wrong[0]["clip"]):
        manifest_pairs(path, clips, labels, pools, 0)
    write_rows(path, rows[1:])
    with pytest.raises(ManifestError, match="on disk but not listed"):
        manifest_pairs(path, clips, labels, pools, 0)


def write_rows(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_bad_recordings_error_or_skip(fake_root: Path, tmp_path: Path) -> None:
    rec = fake_root / "fsdd" / "recordings"
    (rec / "3_sam_6.wav").write_bytes(b"not a wav file at all")
    with pytest.raises(BadFileError, match="3_sam_6.wav"):
        load_data(config(fake_root, tmp_path))
    data = load_data(config(fake_root, tmp_path, on_bad_file="skip"))
    assert sum(data.sizes().values()) == 69
    assert [Path(s["path"]).name for s in data.info["skipped_files"]] == ["3_sam_6.wav"]
    (rec / "notes.wav").write_bytes(b"")
    with pytest.raises(BadFileError, match="notes.wav"):
        load_data(config(fake_root, tmp_path))


def test_difficulty_knobs(fake_root: Path, tmp_path: Path) -> None:
    clean = load_data(config(fake_root, tmp_path))
    hard = load_data(config(fake_root, tmp_path, audio_snr_db=0.0, image_energy_removed=0.75))
    again = load_data(config(fake_root, tmp_path / "other", audio_snr_db=0.0, image_energy_removed=0.75))
    assert not hard.info["cache"]["hit"] and not again.info["cache"]["hit"]
    clean_audio, clean_visual = stack(clean.train)
    hard_audio, hard_visual = stack(hard.train)
    assert not torch.equal(clean_audio, hard_audio) and not torch.equal(clean_visual, hard_visual)
    assert torch.equal(hard_audio, stack(again.train)[0]) and torch.equal(stack(hard.test)[1], stack(again.test)[1])
    k = hard.info["difficulty"]["pca_components"]
    assert 0 < k < 28 * 28 and clean.info["difficulty"]["pca_components"] == 0


def test_pca_keeps_the_requested_energy() -> None:
    rng = np.random.default_rng(0)
    low = rng.standard_normal((300, 3)) @ rng.standard_normal((3, 16)) * 20 + 128  # rank 3 plus noise
    images = np.clip(low + rng.standard_normal((300, 16)), 0, 255).astype(np.uint8).reshape(300, 4, 4)
    out, k = avm.pca_degrade(images, np.arange(200), 0.05)
    assert k == 3 and np.abs(out.astype(float) - images).mean() < 2
    _, k_all = avm.pca_degrade(images, np.arange(200), 0.0)
    assert k_all == 16


# ---------------------------------------------------------------- the real files
def test_real_official_split_pools_and_manifest(real_root: Path, tmp_path: Path) -> None:
    clips = list_clips(real_root, "error", [])
    assert len(clips) == 3000
    assert sum(c.split == "test" for c in clips) == 300 and sum(c.split == "train" for c in clips) == 2700
    images, labels = load_mnist(real_root)
    assert images.shape == (10000, 28, 28)
    pools = image_pools(labels, 0.3, 0)
    assert not set(pools["train"].tolist()) & set(pools["test"].tolist())
    assert len(pools["train"]) + len(pools["test"]) == 10000 and len(pools["test"]) == pytest.approx(3000, abs=10)
    path = tmp_path / "manifest.csv"
    pairs, reused = manifest_pairs(path, clips, labels, pools, 0)
    again, reused_again = manifest_pairs(path, clips, labels, pools, 0)
    assert (reused, reused_again) == (False, True) and again == pairs
    rows = list(csv.DictReader(open(path)))
    assert len(rows) == 3000 and sum(r["split"] == "test" for r in rows) == 300
    train_images = {int(r["image_index"]) for r in rows if r["split"] == "train"}
    test_images = {int(r["image_index"]) for r in rows if r["split"] == "test"}
    assert not train_images & test_images and len(train_images) == 2700 and len(test_images) == 300
    assert all(labels[int(r["image_index"])] == int(r["label"]) == int(r["clip"][0]) for r in rows)


def test_real_loader_subset(real_root: Path, tmp_path: Path) -> None:
    cfg = config(None, tmp_path, target_length=128, num_mel_bins=128, image_size=32, max_clips_per_split=30)
    data = load_data(cfg)
    assert data.sizes()["test"] == 30 and data.sizes()["train"] + data.sizes()["val"] == 30
    assert data.info["class_counts"]["test"] == [3] * 10
    assert data.train.sample(0)[0].shape == (128, 128) and data.test.sample(0)[1].shape == (3, 32, 32)
    assert len(list(csv.DictReader(open(data.info["manifest"])))) == 3000  # the manifest covers every clip
    assert load_data(cfg).info["cache"]["hit"]


def test_a_manifest_path_from_the_config_is_only_read(fake_root: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "m.csv"
    with pytest.raises(FileNotFoundError, match="writes new manifests only under its cache folder"):
        load_data(config(fake_root, tmp_path, manifest=str(target)))
    assert not target.exists()
