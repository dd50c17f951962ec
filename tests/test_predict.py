"""``python -m uvav.predict`` and ``Run.predict`` on runs trained on a tiny UrbanSound8K-AV-layout dataset:
the same class as the model's own forward pass on features computed directly with uvav.data.features."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from omegaconf import OmegaConf
from PIL import Image

from uvav.api import InputError, RunError, load_run
from uvav.cases import CASE_INDEX, CASES
from uvav.data.features import audio_features, images_to_float, load_image
from uvav.models.classifier import AVClassifier
from uvav.models.prompts import PromptBank

from .conftest import run_module
from .data.conftest import write_image, write_tone


@pytest.fixture
def runs(us8k_runs) -> dict[str, Path]:
    """The shared tiny FT and PL runs on a generated UrbanSound8K-AV layout, by method (prediction only reads
    them)."""
    return us8k_runs


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """Inputs as a user has them: stereo 44.1 kHz and 1 s / mono 8 kHz and 10 ms WAVs; JPEG, RGBA, palette and
    greyscale images of other sizes."""
    d = tmp_path_factory.mktemp("inputs")
    write_tone(d / "clip.wav", 44100, 1.0, channels=2, freq=650.0, seed=1)
    write_tone(d / "short.wav", 8000, 0.01, freq=300.0, seed=2)
    write_image(d / "frame", 0, 3)  # frame.jpg
    write_image(d / "rgba", 1, 5)  # rgba.png
    write_image(d / "gray", 2, 7)  # gray.png
    Image.open(d / "frame.jpg").convert("P", palette=Image.Palette.ADAPTIVE).save(d / "palette.png")
    return d


def expected(run_dir: Path, audio: Path | None, image: Path | None, mode: str = "uncertain",
             case: str | None = None) -> tuple[list[str], torch.Tensor]:
    """Class names and probabilities from the checkpoint's own forward pass, rebuilt here by hand."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    cfg = OmegaConf.create(metrics["config"])
    ckpt = torch.load(run_dir / "model.pt", weights_only=True)
    model = AVClassifier.from_config(cfg.backbone, cfg.data, len(ckpt["class_names"]))
    model.load_state_dict(ckpt["model"])
    model.eval()
    norm = metrics["data_info"]["normalization"]
    d = cfg.data
    a = torch.zeros(d.target_length, d.num_mel_bins) if audio is None else (
        (audio_features(audio, d.target_length, d.num_mel_bins)[0] - norm["audio_mean"]) / norm["audio_std"])
    v = torch.zeros(3, d.image_size, d.image_size) if image is None else (
        images_to_float(load_image(image, d.image_size)[None])[0])
    prompts = None
    if ckpt["bank"] is not None:
        bank = PromptBank(list(cfg.scenario.train_cases), cfg.prompt.kind, cfg.prompt.length,
                          cfg.backbone.embed_dim, cfg.backbone.fusion_depth, case_names=CASES)
        bank.load_state_dict(ckpt["bank"])
        prompts = bank.select(mode, 1, torch.tensor([CASE_INDEX[case]]) if case else None)
    with torch.inference_mode():
        return list(ckpt["class_names"]), model(a[None], v[None], prompts).softmax(dim=1)[0]


def check(pred, names: list[str], probs: torch.Tensor) -> None:
    assert pred.label == names[int(probs.argmax())]
    for name, p in pred.top:
        assert p == pytest.approx(float(probs[names.index(name)]), abs=1e-5)


@pytest.mark.parametrize("method", ["ft", "pl"])
@pytest.mark.parametrize("audio, image", [("clip.wav", "frame.jpg"), ("clip.wav", None), (None, "frame.jpg"),
                                          ("short.wav", "palette.png"), (None, "rgba.png"), ("short.wav", "gray.png")])
def test_predict_matches_the_models_forward_pass(runs, files, method, audio, image):
    run = load_run(runs[method], device="cpu")
    a, i = (files / audio if audio else None), (files / image if image else None)
    pred = run.predict(audio=a, image=i, top_k=3)
    names, probs = expected(runs[method], a, i)
    check(pred, names, probs)
    assert len(pred.top) == 3 and pred.mode == ("ft" if method == "ft" else "pl_uncertain")
    assert pred.missing == tuple(m for m, x in (("audio", a), ("image", i)) if x is None)


@pytest.mark.parametrize("audio, image, case", [("clip.wav", None, "noisy_visual"), (None, "frame.jpg", "noisy_audio"),
                                                ("clip.wav", "frame.jpg", "complete")])
def test_oracle_uses_the_case_implied_by_the_missing_modality(runs, files, audio, image, case):
    run = load_run(runs["pl"], device="cpu")
    a, i = (files / audio if audio else None), (files / image if image else None)
    pred = run.predict(audio=a, image=i, prompts="oracle")
    assert (pred.mode, pred.case) == ("pl_oracle", case)
    check(pred, *expected(runs["pl"], a, i, "oracle", case))


def test_waveforms_and_pil_images_equal_their_files(runs, files):
    run = load_run(runs["pl"], device="cpu")
    from_files = run.predict(audio=files / "clip.wav", image=files / "rgba.png", top_k=5)
    wave, rate = sf.read(str(files / "clip.wav"), dtype="float32")  # [samples, channels]
    with Image.open(files / "rgba.png") as img:
        assert run.predict(audio=(wave, rate), image=img, top_k=5).top == from_files.top
    tensor = torch.from_numpy(np.ascontiguousarray(wave.T))  # [channels, samples]
    assert run.predict(audio=tensor, sample_rate=rate, image=str(files / "rgba.png"), top_k=5).top == from_files.top


def predict_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return run_module("uvav.predict", "device=cpu", *args, cwd=tmp_path)


def test_cli_single_sample_says_mode_and_missing_modality(runs, files, tmp_path):
    proc = predict_cli(tmp_path, f"run={runs['pl']}", f"audio={files / 'clip.wav'}", "top_k=2")
    names, probs = expected(runs["pl"], files / "clip.wav", None)
    assert "image missing" in proc.stdout and "mode: pl_uncertain" in proc.stdout
    assert f"1. {names[int(probs.argmax())]}" in proc.stdout and "3." not in proc.stdout
    assert list(tmp_path.iterdir()) == []  # Hydra wrote nothing


def test_cli_folder_and_csv_batches_write_csv(runs, files, tmp_path):
    folder = tmp_path / "batch"
    folder.mkdir()
    shutil.copy(files / "clip.wav", folder / "a.wav")
    shutil.copy(files / "frame.jpg", folder / "a.jpg")
    shutil.copy(files / "short.wav", folder / "b.wav")  # audio only
    shutil.copy(files / "gray.png", folder / "c.png")  # image only
    (folder / "notes.txt").write_text("ignored")
    listing = tmp_path / "list.csv"
    listing.write_text(f"audio,image\nbatch/a.wav,batch/a.jpg\n{files / 'clip.wav'},\n,batch/c.png\n")
    pairs = {
        "folder": [(folder / "a.wav", folder / "a.jpg"), (folder / "b.wav", None), (None, folder / "c.png")],
        "csv": [(folder / "a.wav", folder / "a.jpg"), (files / "clip.wav", None), (None, folder / "c.png")],
    }
    for kind, inputs in (("folder", "batch"), ("csv", "list.csv")):
        predict_cli(tmp_path, f"run={runs['ft']}", f"inputs={inputs}", f"out=out_{kind}.csv")
        with open(tmp_path / f"out_{kind}.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert [r["missing"] for r in rows] == ["", "image", "audio"]
        assert all(r["mode"] == "ft" and r["error"] == "" and r["class_3"] for r in rows)
        for row, (a, i) in zip(rows, pairs[kind], strict=True):
            names, probs = expected(runs["ft"], a, i)
            assert row["class_1"] == names[int(probs.argmax())]
            assert float(row["prob_1"]) == pytest.approx(float(probs.max()), abs=1e-5)


def test_bad_inputs_are_named(runs, files, tmp_path):
    run = load_run(runs["ft"], device="cpu")
    (tmp_path / "bad.wav").write_bytes(b"not a wav at all")
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(InputError, match="audio file not found: .*nope.wav"):
        run.predict(audio=tmp_path / "nope.wav")
    with pytest.raises(InputError, match="cannot read audio file .*bad.wav"):
        run.predict(audio=tmp_path / "bad.wav", image=files / "frame.jpg")
    with pytest.raises(InputError, match="cannot read image file .*bad.jpg"):
        run.predict(image=tmp_path / "bad.jpg")
    with pytest.raises(InputError, match="give audio=, image= or both"):
        run.predict()
    preds = run.predict_many([(tmp_path / "bad.wav", None), (files / "clip.wav", None)], on_error="skip")
    assert "bad.wav" in preds[0].error and preds[1].label is not None


def test_runs_that_cannot_predict_from_files_say_why(runs, files, tmp_path):
    synthetic, unnormalised = tmp_path / "synthetic", tmp_path / "unnormalised"
    for target in (synthetic, unnormalised):
        shutil.copytree(runs["pl"], target)
    metrics = json.loads((synthetic / "metrics.json").read_text())
    metrics["config"]["data"]["name"] = "synthetic"
    (synthetic / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(RunError, match="synthetic dataset.*generated in code.*makes no sense"):
        load_run(synthetic).predict(audio=files / "clip.wav")
    metrics = json.loads((unnormalised / "metrics.json").read_text())
    del metrics["data_info"]["normalization"]
    (unnormalised / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(RunError, match="no normalisation statistics"):
        load_run(unnormalised)
