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

from uvav.checks import register_configs
from uvav.config import NoiseConfig, config_dir
from uvav.data import load_data
from uvav.data.cavmae_json import CavmaeJsonDataConfig, stored_frames
from uvav.data.features import BadFileError
from uvav.data.loading import EvalSet, TrainSet

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


def stored_grey(split, i: int, frame: int = 0) -> float:
    return float(split.store.read(int(split.rows[i]))[1][frame].astype(float).mean())


def grey(image: torch.Tensor) -> float:
    """The grey level (0-255) of a normalised image ``[3, S, S]``."""
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    return float((image.mean(dim=(1, 2)) * std + mean).mean() * 255)


def test_stores_every_frame_trains_on_a_random_one_and_evaluates_the_middle_or_all(datafiles: Path,
                                                                                   tmp_path: Path) -> None:
    data = load_data(config(datafiles, tmp_path))
    assert data.class_names == NAMES
    assert data.sizes() == {"train": 6, "val": 3, "test": 3}  # val: one clip per class carved from train
    assert data.info["class_counts"]["test"] == [1, 1, 1] and data.info["multi_label"] is False
    assert data.test.labels.tolist() == [0, 1, 2] and data.test.labels.dtype == torch.long
    assert data.info["frame"]["stored"] == list(range(10)) and data.info["frame"]["fallbacks"] == 0
    assert data.info["frames"] == {"stored": 10, "train": "random", "val": "middle", "test": "average"}
    assert [round(stored_grey(data.train, 0, f)) for f in (0, 9)] == [round(frame_colour(0)), frame_colour(9)]
    audio, visual = data.val.sample(0)
    assert audio.shape == (32, 16) and visual.shape == (3, 16, 16) and abs(grey(visual) - frame_colour(5)) < 2
    audio, frames = data.test.sample(0)  # eval_frames=average: every frame
    assert frames.shape == (10, 3, 16, 16) and abs(grey(frames[7]) - frame_colour(7)) < 2
    noisy = EvalSet(data.test, NoiseConfig(), ["complete", "noisy_visual"], 0)[3][1]  # test clip 1, noisy_visual
    assert noisy.shape == (10, 3, 16, 16)
    one = EvalSet(data.test.with_frames("middle"), NoiseConfig(), ["complete", "noisy_visual"], 0)[3][1]
    torch.testing.assert_close(noisy[5], one)  # each frame corrupted with the clip's own draws
    # training: a random frame per sample and epoch, the same draw for the same (seed, epoch, sample)
    drawn = [round(grey(TrainSet(data.train, NoiseConfig(), ["complete"], 0, epoch)[0][1])) for epoch in range(8)]
    again = [round(grey(TrainSet(data.train, NoiseConfig(), ["complete"], 0, epoch)[0][1])) for epoch in range(8)]
    assert drawn == again and len(set(drawn)) > 2
    assert set(drawn) <= {round(grey(frames[f])) for f in range(10)}
    middle = load_data(config(datafiles, tmp_path, eval_frames="middle"))
    assert middle.test.sample(0)[1].shape == (3, 16, 16)


def test_a_fixed_frame_stores_only_that_one(datafiles: Path, tmp_path: Path) -> None:
    fixed = load_data(config(datafiles, tmp_path, frame="2"))
    assert fixed.train.store.frames == 1 and fixed.info["frame"]["stored"] == [2]
    for split in (fixed.train, fixed.val, fixed.test):
        assert abs(grey(split.sample(0)[1]) - frame_colour(2)) < 2
    middle = load_data(config(datafiles, tmp_path, frame="middle"))
    assert middle.test.store.bytes < fixed.test.store.bytes * 1.01 and middle.info["frame"]["stored"] == [5]
    assert stored_frames("random", 3) == [0, 1, 2] and stored_frames("middle", 1) == [0]
    assert stored_frames(3, 10) == [3]
    for bad in ("first", "10", "-1"):
        with pytest.raises(ValueError, match="data.frame"):
            stored_frames(bad, 10)


def test_val_datafile(datafiles: Path, tmp_path: Path) -> None:
    write_json(datafiles / "val.json", [make_clip(datafiles, "extra", 1)])
    data = load_data(config(datafiles, tmp_path, val_json=str(datafiles / "val.json")))
    assert data.sizes() == {"train": 9, "val": 1, "test": 3} and data.val.labels.tolist() == [1]
    assert data.info["split"]["val_json"] == str(datafiles / "val.json")


def test_multi_label_entries_give_multi_hot_labels(datafiles: Path, tmp_path: Path) -> None:
    entries = json.loads((datafiles / "train.json").read_text())["data"]
    entries[4]["labels"] = "/m/dog,/m/cat"
    write_json(datafiles / "train.json", entries)
    data = load_data(config(datafiles, tmp_path, frame="middle"))  # multi_label=auto
    assert data.info["multi_label"] is True and data.info["split"]["val"] == "random from train_json"
    every = torch.cat([data.train.labels, data.val.labels])
    assert every.dtype == torch.float32 and every.shape == (9, 3) and every.sum(dim=1).tolist().count(2.0) == 1
    assert data.test.labels.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert sum(data.info["class_counts"]["train"]) + sum(data.info["class_counts"]["val"]) == 10
    assert load_data(config(datafiles, tmp_path, frame="middle", multi_label="true")).test.labels.dim() == 2
    with pytest.raises(BadFileError,
                       match=r"several labels with data.multi_label=false.*video_id v11\) has \['/m/dog', '/m/cat'\]"):
        load_data(config(datafiles, tmp_path, multi_label="false"))
    data = load_data(config(datafiles, tmp_path, multi_label="false", on_bad_file="skip"))
    assert sum(data.sizes().values()) == 11 and "v11" in data.info["skipped_files"][0]["path"]
    with pytest.raises(ValueError, match="data.multi_label='sometimes'"):
        load_data(config(datafiles, tmp_path, multi_label="sometimes"))


def test_missing_frames_fall_back_to_the_next_lower_one(datafiles: Path, tmp_path: Path) -> None:
    (datafiles / "frames" / "frame_5" / "v20.jpg").unlink()
    (datafiles / "frames" / "frame_4" / "v20.jpg").unlink()
    with pytest.warns(UserWarning, match=r"2 frame file\(s\) of 1 clip\(s\) missing"):
        data = load_data(config(datafiles, tmp_path))
    assert data.info["frame"]["fallbacks"] == 2 and data.info["frame"]["clips_with_fallback"] == 1
    assert data.info["frame"]["fallback_examples"] == ["v20 frame_4 -> frame_3", "v20 frame_5 -> frame_3"]
    frames = data.train.store.read(6)[1]  # store row 6: v20, the 7th clip of train.json
    assert [round(float(frames[f].mean())) for f in (3, 4, 5, 6)] == [frame_colour(f) for f in (3, 3, 3, 6)]
    for i in range(10):
        (datafiles / "frames" / f"frame_{i}" / "v20.jpg").unlink(missing_ok=True)
    with pytest.raises(BadFileError) as err:
        load_data(config(datafiles, tmp_path))
    assert "frame_<0..9>" in str(err.value) and "v20" in str(err.value) and "<video_path>/frame_<i>" in str(err.value)
    with pytest.raises(FileNotFoundError, match="data.label_csv is not set"):
        load_data(OmegaConf.structured(CavmaeJsonDataConfig(train_json="a", test_json="b")))


def test_fewer_frames_extracted_run_with_the_defaults(datafiles: Path, tmp_path: Path) -> None:
    for i in range(1, 10):  # only frame_0 extracted
        for f in (datafiles / "frames" / f"frame_{i}").iterdir():
            f.unlink()
    with pytest.warns(UserWarning, match="frame"):
        data = load_data(config(datafiles, tmp_path))
    assert data.info["frame"]["fallbacks"] == 9 * 12 and data.sizes() == {"train": 6, "val": 3, "test": 3}
    assert abs(grey(data.val.sample(0)[1]) - frame_colour(0)) < 2


def test_malformed_datafiles_and_csvs_name_the_file_and_row(datafiles: Path, tmp_path: Path) -> None:
    train = datafiles / "train.json"
    train.write_text(train.read_text()[:-40])
    with pytest.raises(ValueError, match=rf"{train} line 1 column \d+: not valid JSON"):
        load_data(config(datafiles, tmp_path))
    write_json(train, [make_clip(datafiles, "v00", 0)])
    csv = datafiles / "labels.csv"
    csv.write_text("index,mid\n0,/m/dog\n1,/m/cat\n2,/m/car\n")  # no display_name: names are the mids
    assert load_data(config(datafiles, tmp_path)).class_names == MIDS
    csv.write_text("index,mid\n0,/m/dog\none,/m/cat\n2,/m/car\n")
    with pytest.raises(ValueError, match=rf"{csv} line 3: index 'one' is not an integer"):
        load_data(config(datafiles, tmp_path))


def test_overlaps_warn_with_their_count(datafiles: Path, tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match=r"data.val_json is data.test_json \(.*, 3 clips\)"):
        data = load_data(config(datafiles, tmp_path, val_json=str(datafiles / "test.json")))
    assert data.info["split"]["overlaps"] == {"val_is_test": 3}
    entries = json.loads((datafiles / "train.json").read_text())["data"]
    write_json(datafiles / "test.json", entries[:2])
    with pytest.warns(UserWarning, match=r"2 clip\(s\) \(by video_id\) of data.train_json .* data.test_json"):
        data = load_data(config(datafiles, tmp_path))
    assert data.info["split"]["overlaps"] == {"train_test_shared": 2}


def test_a_datafile_with_every_clip_skipped_says_why(datafiles: Path, tmp_path: Path) -> None:
    for wav in (datafiles / "audio").iterdir():
        if wav.name[2] != "3":
            wav.unlink()
    with pytest.raises(ValueError, match=r"no usable clips in the train datafile .* \(9 entries; skipped: 9 x "
                       r"audio not found \(e.g. .*v00.wav\)\)"):
        load_data(config(datafiles, tmp_path, on_bad_file="skip"))


def test_float32_store_is_exact(datafiles: Path, tmp_path: Path) -> None:
    half = load_data(config(datafiles, tmp_path, frame="middle"))
    full = load_data(config(datafiles, tmp_path, frame="middle", store_dtype="float32"))
    assert full.info["features"]["store_dtype"] == "float32" and half.info["features"]["store_dtype"] == "float16"
    assert full.train.store.folder != half.train.store.folder
    assert full.train.store.read(0)[0].dtype == np.float32
    diff = (full.test.sample(0)[0] - half.test.sample(0)[0]).abs().max()
    assert 0 < diff <= 2**-8 / 4.4849 + 1e-7  # |x| < 16 after the log: half an fp16 step, CAV-MAE's std
    with pytest.raises(ValueError, match="data.store_dtype='bfloat16'"):
        load_data(config(datafiles, tmp_path, store_dtype="bfloat16"))


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
