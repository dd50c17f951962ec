"""Faults injected on purpose: NaN loss, kill -9 mid-training, concurrent jobs, untrusted files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
import torch

import uvav.train.fitting as train_module
from uvav.outputs import atomic_write_json
from uvav.pipeline import run_pipeline
from uvav.train import NonFiniteLossError

from .conftest import TINY, compose_config, run_cli, start_module

SLOWER = [o for o in TINY if not o.startswith(("data.num_train", "trainer.epochs"))] + [
    "data.num_train=480", "trainer.epochs=4", "trainer.batch_size=32"]


def test_nan_loss_stops_with_clear_error_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    cfg = compose_config(f"paths.cache_dir={tmp_path / 'cache'}", "method=ft", "method.epochs=3")
    real = train_module.F.cross_entropy
    calls = {"n": 0}

    def poisoned(logits, labels):
        calls["n"] += 1
        return real(logits, labels) * (float("nan") if calls["n"] > 4 else 1.0)  # epoch 0 has 3 steps

    monkeypatch.setattr(train_module.F, "cross_entropy", poisoned)
    with pytest.raises(NonFiniteLossError, match="loss is nan at epoch 1"):
        run_pipeline(cfg, tmp_path / "job")
    (checkpoint,) = (tmp_path / "cache" / "ft").glob("*/last.pt")
    state = torch.load(checkpoint, weights_only=True)
    assert state["epoch"] == 0
    assert all(torch.isfinite(t).all() for t in state["trainable"].values())
    assert not list((tmp_path / "cache" / "ft").glob("*/model.pt"))  # no half-trained model is published


def _metrics(folder) -> dict:
    (path,) = folder.rglob("metrics.json")
    return json.loads(path.read_text())


KILL_ARGS = ["method=pl", "trainer.num_threads=1", *SLOWER]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    reference = tmp_path_factory.mktemp("reference")
    run_cli(reference, *KILL_ARGS)
    return _metrics(reference / "run")


# kill points: early in FT's second epoch (its first checkpoint exists; an epoch takes ~0.3 s here, so the kill may
# also land while the next checkpoint is written: either one is resumed), and while the head-only stage encodes its
# cached views (their entry of the encodings store exists); the feature store's own kill test is in
# tests/data/test_store.py
KILL_POINTS = {"training": ("last*.pt", 0.05), "cache build": ("encodings/*/train", 0.0)}


@pytest.mark.slow
@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_kill_9_then_same_command_resumes_to_same_metrics(tmp_path, uninterrupted, point):
    pattern, delay = KILL_POINTS[point]
    killed = tmp_path / "killed"
    killed.mkdir()
    proc = start_module("uvav.run", *KILL_ARGS, f"paths.cache_dir={killed / 'cache'}",
                        f"hydra.run.dir={killed / 'run'}", cwd=killed)
    deadline = time.time() + 240
    while not list((killed / "cache").rglob(pattern)) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(delay)
    assert proc.poll() is None, "the job finished before it could be killed; make it longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "run" / "metrics.json").exists()
    resumed = run_cli(killed, *KILL_ARGS)
    if point == "training":
        assert "resumed from" in resumed.stdout + resumed.stderr
    res = _metrics(killed / "run")
    assert res["accuracy"] == uninterrupted["accuracy"]
    assert res["val"] == uninterrupted["val"]
    assert not list((killed / "cache").rglob("tokens_*"))  # no job-local token cache is left behind
    entries = [e for e in (killed / "cache" / "encodings").iterdir() if e.is_dir()]
    assert entries and all((e / "complete").exists() for e in entries)  # the unfinished entry was built again


@pytest.mark.slow
def test_two_jobs_needing_the_same_ft_model_train_it_once(tmp_path):
    procs = [start_module("uvav.run", f"method={method}", *TINY, f"paths.cache_dir={tmp_path / 'cache'}",
                          f"hydra.run.dir={tmp_path / name}", cwd=tmp_path, stderr=subprocess.PIPE)
             for name, method in (("a", "ft"), ("b", "pl"))]
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()[-2000:]
    reused = sorted(_metrics(tmp_path / name)["stages"]["ft"]["reused"] for name in "ab")
    assert reused == [False, True]
    assert len(list((tmp_path / "cache" / "ft").glob("*/model.pt"))) == 1


@pytest.mark.slow
def test_relaunch_reuses_a_finished_job(tmp_path):
    first = run_cli(tmp_path, "method=ft", *TINY)
    second = run_cli(tmp_path, "method=ft", *TINY)
    assert "reusing the finished job" in second.stdout + second.stderr
    assert "reusing" not in first.stdout + first.stderr


def test_checkpoints_load_with_weights_only(tmp_path):
    """A checkpoint that would run code when unpickled is refused."""
    evil = tmp_path / "model.pt"

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"x": Payload()}, evil)
    with pytest.raises(Exception, match="Weights only load failed|weights_only"):
        torch.load(evil, weights_only=True)
    from uvav.models.classifier import AVClassifier
    from uvav.weights.cavmae import load_cavmae_checkpoint

    model = AVClassifier(2, 32, 32, 16, embed_dim=32, num_heads=2, depth=1, patch_size=8, image_patch_size=4)
    with pytest.raises(ValueError, match=str(evil.name)):
        load_cavmae_checkpoint(model, evil)


def test_atomic_json_never_leaves_half_a_file(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    atomic_write_json(target, {"a": 1})

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_json(target, {"a": 2, "b": list(range(1000))})
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
