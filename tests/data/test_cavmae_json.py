"""data=cavmae_json: CAV-MAE datafiles, label CSV and frame folders generated in the published layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image

from uvav.config import config_dir, register_configs
from uvav.data import load_data
from uvav.data.cavmae_json import CavmaeJsonDataConfig, frame_index
from uvav.data.features import BadFileError

from .conftest import write_tone

MIDS = ["/m/dog", "/m/cat", "/m/car"]
NAMES = ["Dog", "Cat", "Car"]
NUM_FRAMES = 10


def frame_colour(i: int) -> int:
    return 20 + 22 * i  # frames differ by grey level, far apart for JPEG


def make_clip(root: Path, vid: str, label: int) -> dict[str, str]:
    """A wav and 10 frames of one clip; paths in the datafile relative to ``root`` (where the JSON lives)."""
    write_tone(root / "audio" / f"{vid}.wav", 16000, 0.5, freq=300.0 + 200 * label)
    for i in range(NUM_FRAMES):
        path = root / "frames" / f"frame_{i}" / f"{vid}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((24, 32, 3), frame_colour(i), np.uint8)).save(path, quality=95)
    return {"video_id": vid, "wav": f"audio/{vid}.wav", "video_path": "frames", "labels": MIDS[label]}


@pytest.fixture
def datafiles(tmp_path: Path) -> Path:
    """4 clips per class: 3 train, 1 test; a label CSV listed out of index order."""
    root = tmp_path / "cavmae"
    train, test = [], []
    for label in range(3):
        for k in range(4):
            (test if k == 3 else train).append(make_clip(root, f"v{label}{k}", label))
    write_json(root / "train.json", train)
    write_json(root / "test.json", test)
    rows = [f"{i},{m},{n}" for i, (m, n) in enumerate(zip(MIDS, NAMES, strict=True))]
    (root / "labels.csv").write_text("index,mid,display_name\n" + "\n".join(rows[::-1]) + "\n")
    return root


def write_json(path: Path, entries: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"data": entries}))


def config(root: Path, tmp_path: Path, **kw):
    base = dict(train_json=str(root / "train.json"), test_json=str(root / "test.json"),
                label_csv=str(root / "labels.csv"), target_length=32, num_mel_bins=16, image_size=16,
                cache_dir=str(tmp_path / "cache"), num_workers=0)
    return OmegaConf.structured(CavmaeJsonDataConfig(**{**base, **kw}))


def stored_grey(split, i: int) -> float:
    return float(split.store.read(int(split.rows[i]))[1].astype(float).mean())


def test_loads_labels_classes_and_the_middle_frame(datafiles: Path, tmp_path: Path) -> None:
    data = load_data(config(datafiles, tmp_path))
    assert data.class_names == NAMES
    assert data.sizes() == {"train": 6, "val": 3, "test": 3}  # val: one clip per class carved from train
    assert data.info["class_counts"]["test"] == [1, 1, 1]
    assert data.test.labels.tolist() == [0, 1, 2]
    assert data.info["frame"] == {"index": 5, "num_frames": 10, "choice": "middle"}
    assert data.info["normalization"]["audio"] == "cavmae" and data.info["skipped_files"] == []
    for split in (data.train, data.val, data.test):
        for i in range(len(split)):
            assert abs(stored_grey(split, i) - frame_colour(5)) < 2
    audio, visual = data.test.sample(0)
    assert audio.shape == (32, 16) and visual.shape == (3, 16, 16)
    fixed = load_data(config(datafiles, tmp_path, frame="2"))
    assert abs(stored_grey(fixed.train, 0) - frame_colour(2)) < 2 and fixed.info["frame"]["index"] == 2


def test_val_datafile(datafiles: Path, tmp_path: Path) -> None:
    write_json(datafiles / "val.json", [make_clip(datafiles, "extra", 1)])
    data = load_data(config(datafiles, tmp_path, val_json=str(datafiles / "val.json")))
    assert data.sizes() == {"train": 9, "val": 1, "test": 3} and data.val.labels.tolist() == [1]
    assert data.info["split"]["val_json"] == str(datafiles / "val.json")


def test_multi_label_entry(datafiles: Path, tmp_path: Path) -> None:
    entries = json.loads((datafiles / "train.json").read_text())["data"]
    entries[4]["labels"] = "/m/dog,/m/cat"
    write_json(datafiles / "train.json", entries)
    with pytest.raises(BadFileError, match=r"video_id v11\).*2 labels .*single-label"):
        load_data(config(datafiles, tmp_path))
    data = load_data(config(datafiles, tmp_path, on_bad_file="skip"))
    assert sum(data.sizes().values()) == 11 and "v11" in data.info["skipped_files"][0]["path"]


def test_missing_frame_names_the_file_and_layout(datafiles: Path, tmp_path: Path) -> None:
    missing = datafiles / "frames" / "frame_5" / "v20.jpg"
    missing.unlink()
    with pytest.raises(BadFileError) as err:
        load_data(config(datafiles, tmp_path))
    assert str(missing) in str(err.value) and "<video_path>/frame_<i>/<video_id>.jpg" in str(err.value)
    load_data(config(datafiles, tmp_path, frame="4"))  # another frame of that clip is there
    with pytest.raises(FileNotFoundError, match="data.label_csv is not set"):
        load_data(OmegaConf.structured(CavmaeJsonDataConfig(train_json="a", test_json="b")))


def test_frame_choice() -> None:
    assert frame_index("middle", 10) == 5 and frame_index("middle", 1) == 0 and frame_index(3, 10) == 3
    for bad in ("random", "10", "-1"):
        with pytest.raises(ValueError, match="data.frame"):
            frame_index(bad, 10)


def test_hydra_composition(datafiles: Path, tmp_path: Path) -> None:
    register_configs()
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=[
            "data=cavmae_json", f"data.train_json={datafiles / 'train.json'}",
            f"data.test_json={datafiles / 'test.json'}",
            f"data.label_csv={datafiles / 'labels.csv'}", "data.target_length=32", "data.num_mel_bins=16",
            "data.image_size=16", "data.frame=7", f"data.cache_dir={tmp_path / 'c'}"]).data
    data = load_data(cfg)
    assert data.num_classes == 3 and abs(stored_grey(data.test, 0) - frame_colour(7)) < 2
    assert torch.isfinite(data.train.sample(0)[0]).all()
