"""Sweeps as users run them: the Optuna search and its SQLite resume, a killed sweep resumed, parallel launchers."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import defaultdict
from types import SimpleNamespace

import optuna
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.types import RunMode

from uvav import runtime
from uvav.config import config_dir

from .conftest import REPO, TINY, run_cli, start_module

# The search config sets this subdir itself (conf/config.yaml lists `_self_` before `hparams_search`); the tests
# pass it too, so that they keep each run's trials apart whatever the defaults order.
SUBDIR = "hydra.sweep.subdir=${now:%Y%m%d-%H%M%S}_${hydra.job.num}"
# A job's crash, injected whatever the machine: data=faulty data.fail=true (tests/plugins/faulty.py, not imported
# here: it would register its dataset in this process).
FAULTY = [f"hydra.searchpath=[file://{REPO / 'tests' / 'plugins' / 'conf'}]"]
FAULTY_ENV = {"UVAV_PLUGINS": "tests.plugins.faulty", "PYTHONPATH": str(REPO)}


def _metrics(folder) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*/metrics.json"))]


@pytest.mark.slow
def test_optuna_search_continues_its_sqlite_study(tmp_path):
    search = ["-m", "hparams_search=prompt_length", "hydra.sweeper.n_trials=3", SUBDIR, *TINY]
    storage = f"sqlite:///{tmp_path / 'sweep' / 'optuna.db'}"
    run_cli(tmp_path, *search)
    study = optuna.load_study(study_name="uvav_prompt_length", storage=storage)
    assert len(study.trials) == 3
    run_cli(tmp_path, *search)
    study = optuna.load_study(study_name="uvav_prompt_length", storage=storage)
    assert len(study.trials) == 6
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)

    jobs = _metrics(tmp_path / "sweep")
    assert len(jobs) == 6
    by_params = defaultdict(list)
    for m in jobs:
        by_params[(m["config"]["prompt"]["length"], m["config"]["method"]["lr"])].append(m)
        assert m["objective"]["name"] == "val_acc"
    repeated = [runs for runs in by_params.values() if len(runs) > 1]
    assert repeated, "the seeded sampler repeats its first suggestion when the study continues"
    for runs in repeated:  # a config seen before is reused, not retrained
        assert sum(m.get("reused_from") is None for m in runs) == 1
    values = sorted(t.value for t in study.trials)
    assert values == sorted(m["objective"]["value"] for m in jobs)


@pytest.mark.slow
def test_killed_sweep_resumes_and_reuses_finished_jobs(tmp_path):
    args = ["-m", "seed=0,1,2", *TINY, "trainer.epochs=2", "method.epochs=2"]
    proc = start_module("uvav.run", *args, f"paths.cache_dir={tmp_path / 'cache'}",
                        f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not list((tmp_path / "sweep").glob("*/metrics.json")):
            assert proc.poll() is None and time.monotonic() < deadline, "the sweep ended before a job finished"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done_before = {p.parent.name for p in (tmp_path / "sweep").glob("*/metrics.json")}
    assert "0" in done_before and len(done_before) < 3

    run_cli(tmp_path, *args)
    jobs = {m["seed"]: m for m in _metrics(tmp_path / "sweep")}
    assert sorted(jobs) == [0, 1, 2] and all(m["status"] == "completed" for m in jobs.values())
    for name in done_before:
        assert jobs[int(name)]["reused_from"], f"job {name} finished before the kill and must be reused"
    assert all(jobs[s].get("reused_from") is None for s in (0, 1, 2) if str(s) not in done_before)


@pytest.mark.slow
@pytest.mark.parametrize("launcher", [["hydra/launcher=submitit_local"], ["hydra/launcher=joblib",
                                                                           "hydra.launcher.n_jobs=2"]])
def test_parallel_launchers_run_jobs(tmp_path, launcher):
    run_cli(tmp_path, "-m", *launcher, "seed=0,1", *TINY, fresh=True)  # a launcher's workers load the task anew
    jobs = _metrics(tmp_path / "sweep")
    assert sorted(m["seed"] for m in jobs) == [0, 1]
    assert all(m["status"] == "completed" for m in jobs)
    assert (tmp_path / "cache" / "ft").is_dir()  # relative to the paths given, not to a worker's cwd


def test_search_and_slurm_presets_compose(tmp_path):
    with initialize_config_dir(config_dir(), version_base="1.3"):
        search = compose("config", overrides=["hparams_search=prompt_length", f"hydra.sweep.dir={tmp_path}"],
                         return_hydra_config=True)
        slurm = compose("config", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"],
                        return_hydra_config=True)
    sweeper = search.hydra.sweeper
    assert sweeper.storage == f"sqlite:///{tmp_path}/optuna.db"
    assert sweeper.direction == "maximize" and sweeper.study_name == "uvav_prompt_length"
    assert sweeper.params["prompt.length"] == "choice(1, 2, 4, 8, 16)" and sweeper.sampler.seed is not None
    assert search.objective == "val_acc"
    assert slurm.hydra.launcher._target_.endswith("SlurmLauncher")
    assert slurm.hydra.launcher.gpus_per_node == 1 and slurm.hydra.launcher.partition == "gpu"


def test_auto_device_spreads_multirun_jobs_over_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert runtime.select_device("auto") == torch.device("cuda")  # no Hydra: the default GPU
    from hydra.core.hydra_config import HydraConfig

    monkeypatch.setattr(HydraConfig, "initialized", staticmethod(lambda: True))
    job = SimpleNamespace(mode=RunMode.MULTIRUN, job=SimpleNamespace(num=6))
    monkeypatch.setattr(HydraConfig, "get", staticmethod(lambda: job))
    assert runtime.select_device("auto") == torch.device("cuda:2")
    job.mode = RunMode.RUN
    assert runtime.select_device("auto") == torch.device("cuda")
    assert runtime.select_device("cpu") == torch.device("cpu")


@pytest.mark.slow
def test_a_failing_job_does_not_stop_the_others_and_is_reported(tmp_path):
    """Job 1 crashes when it loads its data (tests/plugins/faulty.py, a runtime failure); job 0 must still finish."""
    from uvav.aggregate import main as aggregate

    proc = run_cli(tmp_path, "-m", "data=faulty", "data.fail=false,true", "method=ft", *TINY, *FAULTY, check=False,
                   env=FAULTY_ENV)
    assert proc.returncode != 0  # the sweep reports the failure...
    assert "injected fault: data.fail=true" in proc.stderr + proc.stdout  # tests/plugins/faulty.py's message
    assert (tmp_path / "sweep" / "0" / "metrics.json").exists()  # ...after the other job finished
    assert not (tmp_path / "sweep" / "1" / "metrics.json").exists()
    aggregate([str(tmp_path / "sweep"), "--out", str(tmp_path / "tables"), "--no-plots"])
    failed = (tmp_path / "tables" / "failed_jobs.csv").read_text()
    assert "/1" in failed and "/0," not in failed


@pytest.mark.slow
def test_failed_optuna_trials_are_recorded_and_the_search_goes_on(tmp_path):
    """A search whose space includes a failing setting (tests/plugins/conf/hparams_search/failing.yaml)."""
    run_cli(tmp_path, "-m", "hparams_search=failing", "data=faulty", "hydra.sweeper.n_trials=4", SUBDIR, *TINY,
            *FAULTY, env=FAULTY_ENV)
    study = optuna.load_study(study_name="uvav_prompt_length", storage=f"sqlite:///{tmp_path / 'sweep' / 'optuna.db'}")
    states = [t.state for t in study.trials]
    assert len(states) == 4
    assert optuna.trial.TrialState.FAIL in states and optuna.trial.TrialState.COMPLETE in states
