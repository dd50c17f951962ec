"""The Optuna search's sampler (the sweeper's ``hydra/sweeper/sampler`` group) and optuna-dashboard on a finished
search: one small real search (random sampler, 2 trials), then the dashboard on 127.0.0.1 serves its trials.
The dashboard needs the extra ``uvav[dashboard]`` (in ``.[dev]``): skipped without it locally, failed under CI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest

from .conftest import TINY, run_cli
from .test_trackers import _free_port, needs

STUDY = "uvav_prompt_length"


@pytest.fixture(scope="module")
def random_search(tmp_path_factory) -> tuple[Path, str]:
    """A finished 2-trial search with ``hydra/sweeper/sampler=random``: its folder and the sweep's log."""
    folder = tmp_path_factory.mktemp("random_search")
    proc = run_cli(folder, "-m", "hparams_search=prompt_length", "hydra/sweeper/sampler=random",
                   "hydra.sweeper.n_trials=2", *TINY, "trainer.num_threads=1")
    return folder, proc.stdout + proc.stderr


def test_the_sampler_is_a_config_choice_and_tpe_by_default():
    from hydra import compose, initialize_config_dir

    from uvav.config import config_dir

    with initialize_config_dir(config_dir(), version_base="1.3"):
        default = compose("config", overrides=["hparams_search=prompt_length"], return_hydra_config=True)
        chosen = compose("config", overrides=["hparams_search=prompt_length", "hydra/sweeper/sampler=qmc"],
                         return_hydra_config=True)
    sampler = default.hydra.sweeper.sampler
    assert sampler._target_ == "optuna.samplers.TPESampler" and sampler.n_startup_trials == 4 and sampler.seed == 123
    assert chosen.hydra.sweeper.sampler._target_ == "optuna.samplers.QMCSampler"
    assert chosen.hydra.sweeper.sampler.seed == 123  # the search's seed applies to any sampler


def test_the_chosen_sampler_draws_the_trials(random_search):
    folder, log = random_search
    assert "Sampler: RandomSampler" in log  # what the sweeper built, from its own log line
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{folder / 'sweep' / 'optuna.db'}")
    assert len(study.trials) == 2 and all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


def test_optuna_dashboard_serves_the_trials_of_a_finished_search(random_search):
    needs("optuna_dashboard")
    folder, _ = random_search
    storage = f"sqlite:///{folder / 'sweep' / 'optuna.db'}"
    command = shutil.which("optuna-dashboard", path=str(Path(sys.executable).parent)) or "optuna-dashboard"
    port = _free_port()
    server = subprocess.Popen([command, storage, "--host", "127.0.0.1", "--port", str(port), "--quiet"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        studies = _get_json(f"http://127.0.0.1:{port}/api/studies", server)["study_summaries"]
        (summary,) = [s for s in studies if s["study_name"] == STUDY]
        served = _get_json(f"http://127.0.0.1:{port}/api/studies/{summary['study_id']}", server)["trials"]
    finally:
        server.terminate()
        server.wait(timeout=30)
    stored = optuna.load_study(study_name=STUDY, storage=storage).trials
    assert [t["number"] for t in served] == [t.number for t in stored]
    for web, trial in zip(served, stored, strict=True):
        assert web["state"] == "Complete" and web["values"] == pytest.approx(trial.values)
        assert {p["name"]: p["param_external_value"] for p in web["params"]} == {
            k: str(v) for k, v in trial.params.items()}


def _get_json(url: str, server: subprocess.Popen, wait_s: float = 60) -> dict:
    """GET ``url`` once the server answers (it starts in a few seconds)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.loads(response.read())
        except OSError as error:
            if server.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no answer from {url}: {server.stdout.read()[-2000:]}") from error
            time.sleep(0.5)
