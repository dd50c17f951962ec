"""CAV-MAE's own features of the shared fixture (``../shared/fixtures/cavmae_reference/features``, its README) read
back through ``data=cavmae_json``: the fbank and image of every clip within 1e-4 at full precision."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import REPO, shared_fixture
from uvav.data import load_data
from uvav.data.cavmae_json import CavmaeJsonDataConfig
from uvav.data.features import CAVMAE_STD

FIXTURE = REPO.parent / "shared" / "fixtures" / "cavmae_reference" / "features"
TOLERANCE = 1e-4  # the fixture's, for features in float32


@pytest.fixture(scope="module")
def reference() -> dict:
    return torch.load(shared_fixture("cavmae_reference", "features", "reference.pt"), weights_only=True)


def fixture_data(tmp_path: Path, audio_folder: str, **kw):
    """The fixture's datafile with absolute paths into the read-only fixture (audio from ``audio_folder``),
    as train, validation and test set, read with CAV-MAE's settings of reference.pt."""
    entries = json.loads((FIXTURE / "datafile.json").read_text())["data"]
    for e in entries:
        e["wav"] = str(FIXTURE / audio_folder / f"{e['video_id']}.wav")
        e["video_path"] = str(FIXTURE / "frames")
    datafile = tmp_path / "datafile.json"
    datafile.write_text(json.dumps({"data": entries}))
    cfg = CavmaeJsonDataConfig(train_json=str(datafile), val_json=str(datafile), test_json=str(datafile),
                               label_csv=str(FIXTURE / "labels.csv"), target_length=256, image_size=128,
                               normalize="cavmae", eval_frames="middle", cache_dir=str(tmp_path / "cache"),
                               num_workers=0, **{"store_dtype": "float32", **kw})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # val = test = train: warned, as it should be
        return load_data(OmegaConf.structured(cfg)), [e["video_id"] for e in entries]


@pytest.mark.parametrize("audio_folder", ["prepared", "wav"])
def test_features_equal_cavmae_s(reference: dict, tmp_path: Path, audio_folder: str) -> None:
    """``prepared/``: what CAV-MAE's offline preparation made (bit-exact audio path); ``wav/``: the original
    44.1 kHz stereo, 16 kHz and 8 kHz files through uvav's first channel and resampling."""
    data, ids = fixture_data(tmp_path, audio_folder)
    assert data.info["multi_label"] is True and data.test.labels.shape == (3, 10)
    for i, vid in enumerate(ids):
        ref = reference["clips"][vid]
        fbank, image = data.test.sample(i)
        assert (fbank - ref["fbank"]).abs().max() <= TOLERANCE, vid
        assert (image - ref["image"]).abs().max() <= TOLERANCE, vid
        assert torch.equal(data.test.labels[i], ref["label"].float()), vid


def test_a_float16_store_adds_at_most_half_an_fp16_step(reference: dict, tmp_path: Path) -> None:
    data, ids = fixture_data(tmp_path, "prepared", store_dtype="float16")
    worst = max(float((data.test.sample(i)[0] - reference["clips"][vid]["fbank"]).abs().max())
                for i, vid in enumerate(ids))
    assert 1e-4 < worst <= 2**-8 / CAVMAE_STD + 1e-7  # log-mel values within +-16: fp16 step 2^-7 there
