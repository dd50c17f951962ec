"""``method=pretrain``: CAV-MAE's objective, its checkpoint loaded by every method, and resume after ``kill -9``."""

from __future__ import annotations

import json
import math
import os
import signal
import time

import pandas as pd
import pytest
import torch

from uvav.api import RunError, load_run
from uvav.checks import validate
from uvav.config import ConfigError
from uvav.jobs import read_finished
from uvav.loggers import read_curves
from uvav.models.mae import AVPretrainer, _masked_mse
from uvav.pipeline import run_pipeline
from uvav.train import NonFiniteLossError

from .conftest import TINY, compose_config, run_cli, start_module, tiny_model

PRETRAIN_ARGS = ["method=pretrain", "method.epochs=2", "trainer.num_threads=1"]


def _metrics(folder) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def test_reconstruction_loss_counts_only_hidden_patches():
    patches = torch.randn(2, 6, 4)
    target = (patches - patches.mean(-1, keepdim=True)) / (patches.var(-1, keepdim=True) + 1e-6).sqrt()
    keep = torch.tensor([[0, 1], [2, 3]])  # visible patches
    pred = target.clone()
    pred[0, :2] += 100.0  # wrong only where visible: no loss
    pred[1, 2:4] += 100.0
    assert _masked_mse(pred, patches, keep).item() == pytest.approx(0.0, abs=1e-6)
    pred[0, 5] += 2.0  # one hidden patch off by 2 in every value: 4 over 8 hidden patches
    assert _masked_mse(pred, patches, keep).item() == pytest.approx(4.0 / 8, rel=1e-4)


def test_pretrainer_masks_three_quarters_and_learns_a_batch():
    torch.manual_seed(0)
    model = AVPretrainer(tiny_model(), mask_ratio=0.75, contrastive_weight=0.5)
    audio, visual = torch.randn(8, 32, 32), torch.randn(8, 3, 16, 16)
    tokens, keep = model._visible(model.backbone.audio, audio.transpose(1, 2).unsqueeze(1), torch.Generator())
    assert keep.shape == (8, 4) and tokens.shape == (8, 4, 32)  # 16 audio patches, a quarter visible
    assert all(len(set(row.tolist())) == 4 for row in keep)  # distinct patches, chosen per sample
    first = model(audio, visual, torch.Generator().manual_seed(0))
    assert all(math.isfinite(v) for v in first.as_floats().values())
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(30):
        losses = model(audio, visual, torch.Generator().manual_seed(step))
        optimizer.zero_grad()
        losses.total.backward()
        optimizer.step()
    last = model(audio, visual, torch.Generator().manual_seed(0))
    assert last.total.item() < 0.8 * first.total.item()
    assert last.contrastive.item() < first.contrastive.item()


def test_pretrain_checkpoint_starts_ft_pl_lora_and_adapter(tmp_path):
    job = tmp_path / "run"
    run_cli(tmp_path, *TINY, *PRETRAIN_ARGS)
    metrics = _metrics(job)
    history = metrics["pretraining"]["history"]
    assert [h["epoch"] for h in history] == [0, 1]
    for key in ("train_total", "train_mae_audio", "train_mae_visual", "train_contrastive", "val_total"):
        assert all(math.isfinite(h[key]) for h in history), key
    assert metrics["objective"] == {"name": "val_loss", "value": history[-1]["val_total"]}
    backbone = torch.load(job / "model.pt", weights_only=True)["model"]
    assert backbone and not any(k.startswith("head.") for k in backbone)

    cache = f"paths.cache_dir={tmp_path / 'cache'}"
    for method in ("pl", "lora", "adapter"):  # PL's job trains the FT model from the checkpoint; the others reuse it
        cfg = compose_config(f"method={method}", f"backbone.checkpoint={job / 'model.pt'}", cache)
        result = run_pipeline(cfg, tmp_path / method)
        weights = result["initial_weights"]
        assert weights["loaded"] == len(backbone), method  # every backbone tensor; the head starts fresh
        assert all(k.startswith("head.") for k in weights["missing"]) and not weights["unexpected"], method
        assert weights["sha256"], method

    with pytest.raises(RunError, match="a pretraining job"):
        load_run(job)
    assert "a pretraining job" in read_finished(job)[1]  # aggregation and comparison skip it, saying why
    again = run_cli(tmp_path, *TINY, *PRETRAIN_ARGS)  # the same command again: the finished job is reused
    assert "reusing the finished job" in again.stdout + again.stderr
    assert _metrics(job)["pretraining"]["history"] == history


def test_a_nan_in_pretraining_stops_like_ft_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    """The shared loop's NaN handling: the error names the run and the step, the weights of the last finished epoch
    stay in the checkpoint, and no model.pt is published."""
    import uvav.models.mae as mae

    real, calls = mae._masked_mse, {"n": 0}

    def poisoned(pred, patches, keep):
        calls["n"] += 1  # epoch 0: 3 steps + 2 validation batches, 2 calls each
        return real(pred, patches, keep) * (float("nan") if calls["n"] > 10 else 1.0)

    monkeypatch.setattr(mae, "_masked_mse", poisoned)
    cfg = compose_config(*PRETRAIN_ARGS, "method.epochs=3", f"paths.cache_dir={tmp_path / 'cache'}")
    with pytest.raises(NonFiniteLossError, match=r"^pretrain: loss is nan at epoch 1, step 0; last good checkpoint"):
        run_pipeline(cfg, tmp_path / "job")
    (checkpoint,) = tmp_path.rglob("last_pretrain.pt")
    state = torch.load(checkpoint, weights_only=True)
    assert state["epoch"] == 0 and [h["epoch"] for h in state["history"]] == [0]
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())
    assert not (tmp_path / "job" / "model.pt").exists()


def test_pretrain_rejects_settings_it_cannot_run():
    for override, key in (("method.mask_ratio=1.0", "method.mask_ratio"),
                          ("data.label_fraction=0.1", "data.label_fraction"),
                          ("trainer.batch_size=1", "trainer.batch_size"),
                          ("method.decoder_dim=33", "method.decoder_dim")):
        with pytest.raises(ConfigError, match=key):
            validate(compose_config("method=pretrain", override))


def test_pretrain_killed_resumes_to_the_same_losses(tmp_path):
    args = [*[o for o in TINY if not o.startswith(("data.num_train", "method.epochs"))], "data.num_train=480",
            "method=pretrain", "method.epochs=5", "trainer.num_threads=1"]
    reference = tmp_path / "reference"
    reference.mkdir()
    run_cli(reference, *args)
    killed = tmp_path / "killed"
    killed.mkdir()
    proc = start_module("uvav.run", *args, f"paths.cache_dir={killed / 'cache'}", f"hydra.run.dir={killed / 'run'}",
                        cwd=killed)
    deadline = time.time() + 240
    while not list((killed / "cache").rglob("last_pretrain.pt")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(0.2)  # inside the next epoch
    assert proc.poll() is None, "the job finished before it could be killed; make it longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    resumed = run_cli(killed, *args)
    assert "resumed from" in resumed.stdout + resumed.stderr
    ours, theirs = (_metrics(d / "run")["pretraining"]["history"] for d in (killed, reference))
    assert [{k: v for k, v in h.items() if k != "time_s"} for h in ours] == \
           [{k: v for k, v in h.items() if k != "time_s"} for h in theirs]
    # training curves in the same folder: the steps re-run after the kill counted once, as in the uninterrupted run
    pd.testing.assert_frame_equal(*(read_curves(d / "run", steps=True) for d in (killed, reference)))
    curves = read_curves(killed / "run")
    for record in ours:
        logged = curves[curves["epoch"] == record["epoch"]].set_index("metric")["value"]
        assert {k: logged[k] for k in record if k != "epoch"} == {k: v for k, v in record.items() if k != "epoch"}
    assert torch.equal(*(torch.load(d / "run" / "model.pt", weights_only=True)["model"]["norm.weight"]
                         for d in (killed, reference)))


def test_a_local_checkpoint_is_keyed_by_its_content(tmp_path):
    """A pretraining job run again into the same folder changes model.pt under the same path: FT models and finished
    jobs built on the old file must not be reused."""
    from uvav.execution import job_key
    from uvav.outputs import fingerprint
    from uvav.pipeline import ft_config

    path = tmp_path / "model.pt"
    torch.save({"model": {"norm.weight": torch.zeros(2)}}, path)
    cfg = compose_config(f"backbone.checkpoint={path}")
    before = fingerprint(ft_config(cfg)), job_key(cfg)
    torch.save({"model": {"norm.weight": torch.ones(2)}}, path)
    after = fingerprint(ft_config(cfg)), job_key(cfg)
    assert before[0] != after[0] and before[1] != after[1]
    assert "checkpoint_content" not in ft_config(compose_config("backbone.checkpoint=cavmae_scale++"))
