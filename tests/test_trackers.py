"""Experiment trackers (``logger=mlflow``, ``logger=wandb``, several loggers at once): a job against a real
``mlflow server`` on 127.0.0.1, W&B offline with its files in the run folder, resumed runs, groups, masked secrets,
and a missing package refused before any work. Needs the extras ``uvav[mlflow,wandb]`` (in ``.[dev]``): skipped
without them locally, failed under ``CI=true``."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from uvav.checks import validate
from uvav.config import ConfigError
from uvav.execution import job_key
from uvav.loggers import TrainingLogger, describe_run, finish_trackers, open_logger
from uvav.loggers.mlflow_logger import git_commit
from uvav.loggers.tracking import group_key, mask_secrets
from uvav.outputs import fingerprint
from uvav.reporting.grouping import group_settings

from .conftest import TINY, compose_config, run_cli

SECRET = "s3cret-pw"


def needs(module: str) -> None:
    """Skip without ``module`` (fail under CI=true: CI installs the extras)."""
    if importlib.util.find_spec(module) is None:
        message = f"{module} not installed (pip install 'uvav[{module}]')"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real ``mlflow server`` on 127.0.0.1 (SQLite backend, artifacts served through it); its URL."""
    needs("mlflow")
    folder, port = tmp_path_factory.mktemp("mlflow_server"), _free_port()
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{folder / 'store.db'}", "--artifacts-destination",
           str(folder / "artifacts")]
    log = (folder / "server.log").open("w")
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("mlflow server did not start:\n" + (folder / "server.log").read_text()[-3000:])
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def test_a_sweep_is_a_set_of_mlflow_runs_grouped_like_the_tables(tmp_path, mlflow_server):
    from mlflow.tracking import MlflowClient

    port = mlflow_server.rsplit(":", 1)[1]
    secret_uri = f"http://uvav:{SECRET}@127.0.0.1:{port}"  # a password in a setting never reaches the tracker
    run_cli(tmp_path, "-m", *TINY, "trainer.num_threads=1", "logger=[csv,mlflow]",
            f"logger.mlflow.tracking_uri={secret_uri}", "logger.mlflow.experiment=sweep_test", "seed=0,1")
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("sweep_test")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2
    jobs = {str(Path(r.data.tags["uvav.job_dir"])): r for r in runs}
    commit = git_commit()
    groups = set()
    for job_dir, run in jobs.items():
        metrics = json.loads((Path(job_dir) / "metrics.json").read_text())
        assert (Path(job_dir) / "curves" / "steps.csv").exists()  # csv logged too
        assert run.info.status == "FINISHED"
        params, tags = run.data.params, run.data.tags
        assert params["method.name"] == "pl" and params["seed"] == str(metrics["seed"])
        assert SECRET not in json.dumps(params) and "***" in params["logger.mlflow.tracking_uri"]
        assert tags["uvav.job_key"] == metrics["job_key"]
        assert tags["uvav.sweep"] == str((tmp_path / "sweep").resolve())
        assert tags.get("mlflow.source.git.commit") == commit  # None only outside a git checkout
        assert tags["uvav.group"] == fingerprint(group_settings(metrics, metrics["choices"]))[:8]  # the tables'
        groups.add(tags["uvav.group"])
        steps = client.get_metric_history(run.info.run_id, "pl/train_loss")
        assert sorted(m.step for m in steps) == [0, 1, 2]  # 96 samples in batches of 32, one epoch
        assert [m.step for m in client.get_metric_history(run.info.run_id, "pl/epoch/val_acc")] == [0]
        assert client.get_metric_history(run.info.run_id, "ft/epoch/val_acc")
        test = client.get_metric_history(run.info.run_id, "test/pl_oracle/complete")
        assert test[0].value == pytest.approx(metrics["accuracy"]["pl_oracle"]["complete"])
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"metrics.json", "accuracy.csv", "curves"} <= artifacts
    assert len(groups) == 1  # two seeds, one row of the tables


def test_a_resumed_job_continues_its_mlflow_run(tmp_path, mlflow_server):
    from mlflow.tracking import MlflowClient

    settings = OmegaConf.create({"name": "mlflow", "log_steps": True,
                                 "mlflow": {"tracking_uri": mlflow_server, "experiment": "resume_test"}})
    run = describe_run({"seed": 0, "method": {"name": "pl"}}, tmp_path / "job")
    for epoch in (0, 1):  # the job killed after epoch 0, then started again in the same folder
        logger = open_logger(settings, tmp_path / "job", run=run)
        logger.epoch("pl", epoch, {"val_acc": 0.5 + epoch / 10})
        logger.close()
    finish_trackers(tmp_path / "job", {"job_key": "k"})
    client = MlflowClient(mlflow_server)
    (only,) = client.search_runs([client.get_experiment_by_name("resume_test").experiment_id])
    assert [m.step for m in client.get_metric_history(only.info.run_id, "pl/epoch/val_acc")] == [0, 1]
    assert only.info.status == "FINISHED" and only.data.tags["uvav.job_key"] == "k"


def test_mlflow_stores_under_outputs_by_default_never_in_the_working_directory(tmp_path, monkeypatch):
    needs("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    job_dir = tmp_path / "outputs" / "runs" / "day" / "job"
    settings = OmegaConf.create({"name": "mlflow", "mlflow": {"tracking_uri": None, "experiment": "uvav"}})
    logger = open_logger(settings, job_dir, run=describe_run({}, job_dir))
    logger.epoch("ft", 0, {"val_acc": 1.0})
    logger.close()
    assert (tmp_path / "outputs" / "mlflow.db").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outputs"]  # no ./mlflow.db, no ./mlruns
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'env.db'}")  # MLflow's own convention
    open_logger(settings, tmp_path / "outputs" / "other", run=describe_run({}, tmp_path / "outputs" / "other")).close()
    assert (tmp_path / "env.db").is_file()


def test_wandb_offline_keeps_its_files_in_the_run_folder(tmp_path):
    needs("wandb")
    run_cli(tmp_path, *TINY, "trainer.num_threads=1", "logger=wandb", fresh=True)  # W&B keeps a process-wide run
    job = tmp_path / "run"
    run_id = (job / "curves" / "wandb_run_id").read_text().strip()
    (folder,) = (job / "curves" / "wandb").glob(f"offline-run-*-{run_id}")
    metrics = json.loads((job / "metrics.json").read_text())
    # the run's log (W&B's own format, protobuf records; `wandb sync` uploads it): config, history and summary
    log = (folder / f"run-{run_id}.wandb").read_bytes()
    assert b"backbone" in log and b"embed_dim" in log  # the resolved config
    assert b"pl/train_loss" in log and b"pl/epoch/val_acc" in log and b"ft/epoch/val_acc" in log  # the curves
    assert b"test/pl_oracle/complete" in log and metrics["job_key"].encode() in log  # the summary
    assert (folder / "files" / "metrics.json").resolve() == (job / "metrics.json").resolve()


def test_a_resumed_job_continues_its_wandb_run_in_the_sweeps_group(tmp_path):
    needs("wandb")
    settings = OmegaConf.create({"name": "wandb", "wandb": {"mode": "offline", "project": "uvav", "entity": None}})
    run = describe_run({"seed": 0}, tmp_path / "job", sweep=str(tmp_path / "sweep_4f2a"))
    for epoch in (0, 1):
        logger = open_logger(settings, tmp_path / "job", run=run)
        logger.epoch("pl", epoch, {"val_acc": 0.5})
        logger.close()
        finish_trackers(tmp_path / "job", {})
    import wandb

    wandb.teardown()  # W&B's service process writes the offline files after run.finish() returns: wait for it
    run_id = (tmp_path / "job" / "curves" / "wandb_run_id").read_text().strip()
    folders = list((tmp_path / "job" / "curves" / "wandb").glob("offline-run-*"))
    assert len(folders) == 2 and all(f.name.endswith(f"-{run_id}") for f in folders)  # one run id, twice
    assert all(b"sweep_4f2a" in next(f.glob("run-*.wandb")).read_bytes() for f in folders)  # the W&B group


def test_a_missing_tracker_package_stops_before_any_work_naming_the_extra(monkeypatch, tmp_path):
    for module, extra in (("mlflow", "mlflow"), ("wandb", "wandb")):
        monkeypatch.setitem(sys.modules, module, None)  # as if not installed
        with pytest.raises(ConfigError, match=rf"pip install 'uvav\[{extra}\]'"):
            validate(compose_config(f"logger.name=[csv,{module}]"))
    proc = run_cli(tmp_path, *TINY, "logger.name=[csv,nosuch]", check=False)
    assert proc.returncode == 2 and "logger.name" in proc.stderr and not (tmp_path / "run" / "curves").exists()
    assert type(open_logger(compose_config("logger=mlflow").logger, tmp_path, enabled=False)) is TrainingLogger


def test_trackers_stay_out_of_job_keys_and_secrets_are_masked():
    plain = compose_config()
    for overrides in (["logger=mlflow", "logger.mlflow.experiment=x"], ["logger.name=[csv,wandb]"]):
        assert job_key(compose_config(*overrides)) == job_key(plain)
    masked = mask_secrets({"storage": f"postgresql://me:{SECRET}@db:5432/x", "api_key": "k", "lr": 0.1,
                           "paths": [f"s3://a:{SECRET}@b/c"]})
    assert SECRET not in json.dumps(masked) and masked["api_key"] == "***" and masked["lr"] == 0.1
    assert masked["storage"] == "postgresql://me:***@db:5432/x"
    config = OmegaConf.to_container(plain, resolve=True)
    assert group_key(config) == fingerprint(group_settings({"config": config}, {}))[:8]
