"""Content integrity: stored models, checkpoints and store chunks are verified by sha256 where reused; run folders
hold copies; the data's content digest reaches the FT key and the job record; stored models record what made them."""

from __future__ import annotations

import json
import logging
import os
from functools import partial
from pathlib import Path

import pytest
import timm
import torch

import uvav.train.loop as train_mod
from uvav.api import load_run
from uvav.data.store import StoreSpec
from uvav.data.store_build import build_store
from uvav.execution import reusable_job
from uvav.outputs import file_sha256, load_checkpoint, save_checkpoint
from uvav.pipeline import ft_key, open_data, run_pipeline

from .conftest import TINY, US8K_TINY, compose_config, run_cli
from .data.conftest import make_us8k
from .test_evaluate import evaluate_cli

JOB = ("method=ft",)


def edit_in_place(path: Path) -> None:
    """Flip one byte in the middle, same size, then put the mtime back: only a content hash sees it."""
    stat = path.stat()
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns


def cached(tmp_path: Path, kind: str) -> Path:
    (folder,) = [p for p in (tmp_path / "cache" / kind).iterdir() if p.is_dir()]
    return folder


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """One tiny FT job run through the CLI, its cache under ``<tmp>/cache``."""
    tmp = tmp_path_factory.mktemp("integrity")
    run_cli(tmp, *TINY, *JOB)
    return tmp


def job_cfg(tmp: Path):
    return compose_config(*JOB, f"paths.cache_dir={tmp / 'cache'}")


@pytest.mark.slow
def test_writing_the_runs_model_leaves_the_cache_intact(finished: Path, caplog) -> None:
    run_model, job = finished / "run" / "model.pt", cached(finished, "jobs")
    record = json.loads((job / "metrics.json").read_text())
    assert run_model.stat().st_ino != (job / "model.pt").stat().st_ino
    before = run_model.read_bytes()
    try:
        other = torch.load(run_model, weights_only=True)
        other["model"] = {k: v + 1 for k, v in other["model"].items()}
        with open(run_model, "r+b") as fh:  # written in place, as an editor or `cat other > model.pt` does
            torch.save(other, fh)
            fh.truncate()
        assert file_sha256(job / "model.pt") == record["model_sha256"]
        with caplog.at_level(logging.WARNING, logger="uvav.api"):
            load_run(finished / "run")
        assert f"{run_model} is not the model its metrics.json scored" in caplog.text
    finally:
        run_model.write_bytes(before)


@pytest.mark.slow
def test_reuse_checks_the_model_hash_and_the_data_digest(finished: Path, tmp_path: Path, caplog) -> None:
    cfg, job = job_cfg(finished), cached(finished, "jobs")
    record_file = job / "metrics.json"
    record = json.loads(record_file.read_text())
    assert record["data_digest"] == open_data(cfg).info["content_digest"]
    assert reusable_job(cfg, job, tmp_path / "a") is not None
    assert file_sha256(tmp_path / "a" / "model.pt") == record["model_sha256"]
    try:
        for changed, why in (({"data_digest": "store:other"}, "its data changed"),
                             ({"model_sha256": None}, "before uvav recorded content hashes")):
            record_file.write_text(json.dumps({**record, **changed}))
            with caplog.at_level(logging.WARNING, logger="uvav.run"):
                assert reusable_job(cfg, job, tmp_path / "b") is None
            assert why in caplog.text
    finally:
        record_file.write_text(json.dumps(record))


@pytest.mark.slow
def test_edited_stored_models_are_retrained_not_reported(finished: Path) -> None:
    job, ft = cached(finished, "jobs"), cached(finished, "ft")
    edit_in_place(job / "model.pt")
    edit_in_place(ft / "model.pt")
    proc = run_cli(finished, *TINY, *JOB)
    log = proc.stdout + proc.stderr
    assert f"{job / 'model.pt'} does not match the sha256" in log and "training it again" in log
    assert f"FT model {ft / 'model.pt'} does not match the sha256" in log
    assert "reused_from" not in json.loads((finished / "run" / "metrics.json").read_text())
    record = json.loads((job / "metrics.json").read_text())
    assert file_sha256(job / "model.pt") == record["model_sha256"]
    assert file_sha256(ft / "model.pt") == json.loads((ft / "info.json").read_text())["model_sha256"]


@pytest.mark.slow
def test_models_record_what_made_them(finished: Path, tmp_path: Path) -> None:
    run = load_run(finished / "run")
    assert run.provenance["torch"] == torch.__version__ and run.provenance["timm"] == timm.__version__
    assert run.provenance["uvav"] and run.provenance["data_digest"].startswith("settings:")
    info = json.loads((cached(finished, "ft") / "info.json").read_text())
    assert info["provenance"]["torch"] == torch.__version__
    printed = evaluate_cli(tmp_path, f"run={finished / 'run'}", "case=complete").stdout
    assert f"model made by: uvav {run.provenance['uvav']}, torch {torch.__version__}" in printed


def test_the_ft_key_names_the_datas_content() -> None:
    cfg = compose_config("method=pl", "seed=0", tiny=False)
    info = open_data(cfg).info
    assert ft_key(cfg, info)[0] == "c44e9534592e4592"  # the default config's FT model (pinned)
    runtime = compose_config("method=pl", "seed=0", "data.num_workers=3", tiny=False)
    assert ft_key(runtime, open_data(runtime).info)[0] == "c44e9534592e4592"  # settings that change no number
    assert ft_key(cfg, {**info, "content_digest": "store:other"})[0] != ft_key(cfg, info)[0]


def test_an_edited_checkpoint_is_discarded(tmp_path: Path, caplog) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"epoch": 3, "w": torch.arange(1000.0)})
    assert load_checkpoint(path)["epoch"] == 3
    edit_in_place(path)
    with caplog.at_level(logging.WARNING, logger="uvav.outputs"):
        assert load_checkpoint(path) is None
    assert f"{path} does not match the sha256" in caplog.text and not path.exists()


@pytest.mark.parametrize("killed_at_write", [0, 1, 2])
def test_a_kill_while_a_checkpoint_is_replaced_leaves_one_that_loads(tmp_path: Path, monkeypatch, killed_at_write
                                                                       ) -> None:
    """save_checkpoint makes three atomic writes (sidecar with both hashes, checkpoint, sidecar): dying before any
    of them leaves the old or the new checkpoint, never one its sidecar disowns."""
    import uvav.outputs as outputs

    path = tmp_path / "last.pt"
    save_checkpoint(path, {"epoch": 0})
    real, calls = outputs.atomic_write_bytes, {"n": 0}

    def dies(target, data):
        if calls["n"] == killed_at_write:
            raise KeyboardInterrupt
        calls["n"] += 1
        real(target, data)

    monkeypatch.setattr(outputs, "atomic_write_bytes", dies)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"epoch": 1})
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == (0 if killed_at_write < 2 else 1)
    save_checkpoint(path, {"epoch": 2})  # a later save leaves one hash only
    assert len(path.with_name("last.pt.sha256").read_text().split()) == 1 and load_checkpoint(path)["epoch"] == 2


def test_an_edited_checkpoint_restarts_the_stage(tmp_path: Path, monkeypatch, caplog) -> None:
    cfg = compose_config("method=ft", "trainer.epochs=2", f"paths.cache_dir={tmp_path}")
    written: list[Path] = []

    def killed_after_one_epoch(path, obj):  # the job dies right after its first checkpoint
        save_checkpoint(path, obj)
        written.append(Path(path))
        raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "save_checkpoint", killed_after_one_epoch)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(cfg, tmp_path / "job")
    monkeypatch.undo()
    edit_in_place(written[0])
    with caplog.at_level(logging.INFO):
        run_pipeline(cfg, tmp_path / "job")
    assert f"{written[0]} does not match the sha256" in caplog.text and "resumed from" not in caplog.text


def fake_decode(item: int) -> tuple[torch.Tensor, bool, torch.Tensor]:
    return torch.full((4, 2), float(item)), False, torch.full((3, 2, 2), item, dtype=torch.uint8)


def test_a_repaired_chunk_changes_the_stores_digest(tmp_path: Path) -> None:
    spec = StoreSpec("fake", partial(fake_decode), (4, 2), (3, 2, 2))
    src = tmp_path / "src.bin"
    src.write_bytes(b"abc")
    build = partial(build_store, spec, list(range(100)), [src], {"k": 1}, tmp_path, workers=0)
    store = build()
    digest = store.content_digest
    assert build().content_digest == digest  # opened again: the same content
    edit_in_place(store.folder / "chunk-00001.audio.npy")
    assert build().content_digest == digest  # unseen without verification (documented)
    with pytest.warns(UserWarning, match="fails its sha256"):
        repaired = build(verify=True)
    assert repaired.content_digest != digest  # models trained on the damaged chunk are not reused
    assert build().content_digest == repaired.content_digest


@pytest.mark.slow
def test_jobs_trained_on_a_damaged_chunk_are_not_reused_once_it_is_repaired(tmp_path: Path) -> None:
    make_us8k(tmp_path / "us8k", per_class=4)
    job = ("method=ft", *US8K_TINY, f"data.root={tmp_path / 'us8k'}", "data.num_workers=0")
    run_cli(tmp_path, *job)
    (store,) = (tmp_path / "cache" / "features").iterdir()
    edit_in_place(store / "chunk-00000.audio.npy")  # unseen without data.verify_store (size and mtime kept)
    repaired = run_cli(tmp_path, *job, "data.verify_store=true")
    log = repaired.stdout + repaired.stderr
    assert "fails its sha256" in log and "its data changed" in log and "training FT model" in log
    assert "reused_from" not in json.loads((tmp_path / "run" / "metrics.json").read_text())
