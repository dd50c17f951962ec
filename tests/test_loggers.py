"""Training curves (``logger`` group): the files of a real job, the schedule they show, resumed jobs, TensorBoard,
job reuse across loggers, and the curves of a sweep in ``uvav.aggregate``."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from uvav.aggregate import main as aggregate_main
from uvav.checks import validate
from uvav.config import ConfigError
from uvav.execution import job_key
from uvav.loggers import CsvLogger, TensorBoardLogger, open_logger, read_curves
from uvav.overrides import evaluation_config
from uvav.pipeline import run_pipeline

from .conftest import TINY, compose_config, run_module
from .test_aggregate import _job, _metrics

EPOCHS, STEPS = 2, 3  # TINY: 96 training samples in batches of 32
ARGS = [*TINY, f"trainer.epochs={EPOCHS}", f"method.epochs={EPOCHS}", "trainer.num_threads=1"]
CASES = ["complete", "noisy_audio", "noisy_visual", "noise_both"]


def _uvav_run(cwd: Path, run_dir: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m uvav.run`` with the caches under ``cwd`` and the job in ``run_dir``."""
    return run_module("uvav.run", *args, f"paths.cache_dir={cwd / 'cache'}", f"hydra.run.dir={run_dir}", cwd=cwd)


@pytest.fixture(scope="module")
def csv_job(tmp_path_factory) -> Path:
    """A default PL job (FT, head only, PL; logger=csv by default), 2 epochs per stage."""
    root = tmp_path_factory.mktemp("csv_job")
    _uvav_run(root, root / "run", *ARGS)
    return root


def _schedule(peak: float) -> list[float]:
    """Every stage's lr per step: linear warm-up over one epoch, then cosine to zero (uvav.train.warmup_cosine)."""
    warmup, total = STEPS, EPOCHS * STEPS
    return [peak * ((s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / (total - warmup))))
            for s in range(total)]


def test_csv_curves_of_a_real_job(csv_job):
    run = csv_job / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    config = metrics["config"]
    steps = pd.read_csv(run / "curves" / "steps.csv")
    assert list(steps.columns) == ["stage", "epoch", "step", "train_loss", "lr"]
    assert list(dict.fromkeys(steps["stage"])) == ["ft", "head_only", "pl"]
    peaks = {"ft": config["trainer"]["lr"], "head_only": config["method"]["lr"], "pl": config["method"]["lr"]}
    epochs = pd.read_csv(run / "curves" / "epochs.csv")
    assert list(epochs.columns) == ["stage", "epoch", "metric", "value"]
    for stage, peak in peaks.items():
        part = steps[steps["stage"] == stage]
        # one row per optimiser step, in order
        assert list(zip(part["epoch"], part["step"], strict=True)) == [(e, s) for e in range(EPOCHS)
                                                                        for s in range(STEPS)]
        assert part["lr"].tolist() == pytest.approx(_schedule(peak))  # warm-up, then cosine
        assert part["lr"].iloc[0] < peak and part["lr"].max() == pytest.approx(peak)
        cases = ["complete"] if stage == "ft" else CASES  # FT trains on method.base_scenario
        rows = epochs[epochs["stage"] == stage]
        for epoch in range(EPOCHS):
            values = rows[rows["epoch"] == epoch].set_index("metric")["value"]
            assert set(values.index) == {"train_loss", "val_acc", "time_s", "lr", *(f"val_{c}" for c in cases)}
            assert values["val_acc"] == pytest.approx(sum(values[f"val_{c}"] for c in cases) / len(cases))
            losses = part[part["epoch"] == epoch]["train_loss"]
            assert values["train_loss"] == pytest.approx(losses.mean())
            assert values["lr"] == part[part["epoch"] == epoch]["lr"].iloc[-1] and values["time_s"] > 0
            if stage != "ft":  # the same numbers as metrics.json's history
                history = metrics["stages"][stage]["history"][epoch]
                assert values["val_acc"] == pytest.approx(history["val_acc"])
                assert values["train_loss"] == pytest.approx(history["train_loss"])
    tidy = read_curves(run)
    assert len(tidy) == len(epochs) and list(tidy.columns) == ["stage", "epoch", "metric", "value"]
    assert len(read_curves(run, steps=True)) == 2 * len(steps)


def test_the_logger_never_changes_a_key_and_a_logger_change_reuses_the_job(csv_job):
    keys = {job_key(compose_config(*ARGS, *extra)) for extra in ([], ["logger=none"], ["logger.log_steps=false"])}
    cfg = compose_config(*ARGS)
    older = OmegaConf.create({k: v for k, v in OmegaConf.to_container(cfg).items() if k != "logger"})
    assert keys == {job_key(older)}  # jobs finished before the logger existed are found again
    again = _uvav_run(csv_job, csv_job / "again", *ARGS, "logger=none", "logger.log_steps=false")
    assert "reusing the finished job" in again.stdout + again.stderr
    first, second = (json.loads((csv_job / d / "metrics.json").read_text()) for d in ("run", "again"))
    assert second["job_key"] == first["job_key"] and second["reused_from"]
    assert not (csv_job / "again" / "curves").exists()  # nothing trained, nothing logged


def test_logger_none_writes_no_curves(tmp_path):
    run_pipeline(compose_config(*ARGS, "method=ft", "logger=none", f"paths.cache_dir={tmp_path / 'cache'}"),
                 tmp_path / "job")
    assert (tmp_path / "job" / "model.pt").exists() and not (tmp_path / "job" / "curves").exists()


def test_tensorboard_event_files_of_a_job(tmp_path):
    pytest.importorskip("tensorboard", reason="logger=tensorboard needs the extra: pip install 'uvav[tensorboard]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = compose_config(*ARGS, "logger=tensorboard", f"paths.cache_dir={tmp_path / 'cache'}")
    validate(cfg)
    run_pipeline(cfg, tmp_path / "job")
    for stage, cases in (("ft", ["complete"]), ("head_only", CASES), ("pl", CASES)):
        events = EventAccumulator(str(tmp_path / "job" / "curves" / "tensorboard" / stage))  # a run per stage
        events.Reload()
        tags = set(events.Tags()["scalars"])
        metrics = ["train_loss", "val_acc", "time_s", "lr", *(f"val_{c}" for c in cases)]
        assert {f"{stage}/train_loss", f"{stage}/lr", *(f"{stage}/epoch/{m}" for m in metrics)} <= tags
        lr = events.Scalars(f"{stage}/lr")
        assert [e.step for e in lr] == list(range(EPOCHS * STEPS))  # global step = epoch * steps per epoch + step
        peak = cfg.trainer.lr if stage == "ft" else cfg.method.lr
        assert [e.value for e in lr] == pytest.approx(_schedule(peak), rel=1e-6)  # float32 in the event files
        assert [e.step for e in events.Scalars(f"{stage}/epoch/val_acc")] == list(range(EPOCHS))
    curves = read_curves(tmp_path / "job")  # no epochs.csv: the event files' epoch scalars
    assert set(curves["stage"]) == {"ft", "head_only", "pl"} and len(curves) == EPOCHS * (5 + 8 + 8)


def test_tensorboard_resumed_stage_continues_its_global_steps(tmp_path):
    pytest.importorskip("tensorboard", reason="logger=tensorboard needs the extra: pip install 'uvav[tensorboard]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    killed = TensorBoardLogger(tmp_path)
    for step in range(STEPS):
        killed.step("pl", 0, step, {"train_loss": 1.0})
    killed.epoch("pl", 0, {"val_acc": 0.5})
    killed.step("pl", 1, 0, {"train_loss": 9.0})  # killed here; the relaunch resumes at epoch 1 in a new process
    killed.close()
    time.sleep(1.01 - time.time() % 1)  # event files sort by their second of creation, as a relaunch's do
    resumed = TensorBoardLogger(tmp_path)
    for step in range(STEPS):
        resumed.step("pl", 1, step, {"train_loss": 2.0})
    resumed.epoch("pl", 1, {"val_acc": 0.6})
    resumed.close()
    events = EventAccumulator(str(tmp_path / "pl"))
    events.Reload()
    loss = [(e.step, e.value) for e in events.Scalars("pl/train_loss")]
    assert loss == [(0, 1.0), (1, 1.0), (2, 1.0), (3, 2.0), (4, 2.0), (5, 2.0)]  # the killed run's step 3 hidden
    assert [(e.step, e.value) for e in events.Scalars("pl/epoch/val_acc")] == [(0, 0.5), (1, pytest.approx(0.6))]


def test_read_curves_keeps_the_last_row_of_a_relogged_epoch(tmp_path):
    killed = CsvLogger(tmp_path / "curves")
    for epoch in (0, 1):
        for step in range(STEPS):
            killed.step("pl", epoch, step, {"train_loss": 1.0 + epoch, "lr": 0.1})
        killed.epoch("pl", epoch, {"train_loss": 1.0 + epoch, "val_acc": 0.5})  # epoch 1: logged, not checkpointed
    killed.step("pl", 2, 0, {"train_loss": 7.0, "lr": 0.1})
    with (tmp_path / "curves" / "steps.csv").open("a") as file:
        file.write("pl,2,1,7.")  # killed in the middle of a line
    # the relaunch resumes from epoch 0's checkpoint: epoch 1 and the steps of epoch 2 again
    resumed = CsvLogger(tmp_path / "curves")
    for epoch in (1, 2):
        for step in range(STEPS):
            resumed.step("pl", epoch, step, {"train_loss": 2.5 + epoch, "lr": 0.2})
        resumed.epoch("pl", epoch, {"train_loss": 2.5 + epoch, "val_acc": 0.75})
    resumed.close()
    raw = (tmp_path / "curves" / "steps.csv").read_text().splitlines()
    assert raw.count("stage,epoch,step,train_loss,lr") == 1 and raw[0].startswith("stage")
    assert "pl,2,1,7." not in raw  # the cut line was removed, not joined to the next row
    epochs = read_curves(tmp_path)
    assert len(pd.read_csv(tmp_path / "curves" / "epochs.csv")) == 8 and len(epochs) == 6
    assert epochs.set_index(["epoch", "metric"])["value"].to_dict() == {
        (0, "train_loss"): 1.0, (0, "val_acc"): 0.5, (1, "train_loss"): 3.5, (1, "val_acc"): 0.75,
        (2, "train_loss"): 4.5, (2, "val_acc"): 0.75}
    steps = read_curves(tmp_path, steps=True)
    assert len(steps) == 3 * STEPS * 2  # (epoch, step) x (train_loss, lr), once each
    loss = steps[steps["metric"] == "train_loss"].set_index(["epoch", "step"])["value"]
    assert loss[(0, 0)] == 1.0 and loss[(1, 2)] == 3.5 and loss[(2, 0)] == 4.5
    assert read_curves(tmp_path / "nothing").empty
    epochs_only = CsvLogger(tmp_path / "epochs_only", log_steps=False)  # logger.log_steps=false
    epochs_only.step("pl", 0, 0, {"train_loss": 1.0, "lr": 0.1})
    epochs_only.epoch("pl", 0, {"val_acc": 0.5})
    epochs_only.close()
    assert [p.name for p in (tmp_path / "epochs_only").iterdir()] == ["epochs.csv"]


def test_tensorboard_without_the_package_fails_before_any_work(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # an import of it raises ImportError
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    cfg = compose_config("logger=tensorboard")
    with pytest.raises(ConfigError, match=r"pip install 'uvav\[tensorboard\]'"):
        validate(cfg)
    with pytest.raises(ImportError, match=r"pip install 'uvav\[tensorboard\]'"):
        open_logger(cfg.logger, tmp_path)
    assert "logger" not in evaluation_config(cfg, tmp_path, {"noise.severity": 2.0})  # evaluating such a run works
    with pytest.raises(ConfigError, match="logger.name"):
        validate(compose_config("logger.name=comet"))
    assert type(open_logger(compose_config().logger, tmp_path, enabled=False)).__name__ == "TrainingLogger"


def test_aggregate_plots_the_curves_of_a_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    for seed in (0, 1):
        job = _job(sweep / str(seed), _metrics(seed))
        logger = CsvLogger(job / "curves")
        for stage in ("ft", "pl"):
            for epoch in range(3):
                logger.step(stage, epoch, 0, {"train_loss": 2.0 - epoch, "lr": 0.1})
                logger.epoch(stage, epoch, {"train_loss": 2.0 - epoch + seed, "val_acc": 0.2 * epoch, "lr": 0.1})
        logger.close()
    _job(sweep / "2", _metrics(2))  # reused or older: no curves
    out = tmp_path / "out"
    assert aggregate_main([str(sweep), "--out", str(out)]) == 0
    curves = pd.read_csv(out / "curves.csv")
    assert list(curves.columns) == ["group", "group_label", "seed", "job_dir", "method", "stage", "epoch", "metric",
                                    "value"]
    assert sorted(curves["seed"].unique()) == [0, 1] and curves["group"].nunique() == 1
    assert len(curves) == 2 * 2 * 3 * 3  # seeds x stages x epochs x metrics
    row = curves[(curves["seed"] == 1) & (curves["stage"] == "pl") & (curves["epoch"] == 2)
                 & (curves["metric"] == "train_loss")]
    assert row["value"].tolist() == [1.0]
    readme = (out / "README.md").read_text()
    for name in ("curves.csv", "curves_ft.png", "curves_pl.png"):
        assert (out / name).stat().st_size > 0 and f"`{name}`" in readme
    assert "2 of 3 jobs have them" in readme
