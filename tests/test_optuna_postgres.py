"""One Optuna search shared by several machines: a real PostgreSQL server on 127.0.0.1, two sweep processes at once
against one study (`.ci/run` installs Debian's server; without it the test skips, and fails under CI=true)."""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
import yaml

from .conftest import TINY

STUDY = "uvav_prompt_length"  # conf/hparams_search/prompt_length.yaml
SUBDIR = "hydra.sweep.subdir=${now:%Y%m%d-%H%M%S}_${hydra.job.num}"


def _server_bin() -> Path | None:
    """Debian's PostgreSQL server programs (initdb, pg_ctl), newest version first."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """A throw-away server (trust authentication, 127.0.0.1 only) with a database ``uvav``; stopped afterwards."""
    bindir = _server_bin()
    if bindir is None:
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL server programs not found: .ci/run installs Debian's postgresql package")
        pytest.skip("PostgreSQL server programs not found (Debian: apt-get install postgresql)")
    # the server refuses to run as root: then it runs as the postgres system user, in a folder it owns (outside
    # pytest's root-only temporary folders)
    folder = Path(tempfile.mkdtemp(prefix="uvav-postgres-"))
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(folder, "postgres")
    data, port = folder / "data", _free_port()

    def pg(*args: str) -> None:
        proc = subprocess.run([*as_user, *args], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"{args[0]} failed:\n{proc.stdout}\n{proc.stderr}"

    pg(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
    pg(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-w", "start", "-o",
       f"-p {port} -c listen_addresses=127.0.0.1 -k {folder} -c fsync=off")
    try:
        import psycopg2

        connection = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
        connection.autocommit = True
        connection.cursor().execute("CREATE DATABASE uvav")
        connection.close()
        yield f"postgresql://postgres@127.0.0.1:{port}/uvav"
    finally:
        pg(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(folder, ignore_errors=True)


def _sweep(tmp_path: Path, url: str, name: str, sampler_seed: int) -> subprocess.Popen:
    """One machine's sweep process: its own sweep folder and sampler seed, the shared study and job cache."""
    cmd = [sys.executable, "-m", "uvav.run", "-m", "hparams_search=prompt_length", f"hydra.sweeper.storage={url}",
           "hydra.sweeper.n_trials=3", f"hydra.sweeper.sampler.seed={sampler_seed}", SUBDIR, *TINY,
           "trainer.num_threads=1", f"hydra.sweep.dir={tmp_path / name}", f"paths.cache_dir={tmp_path / 'cache'}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}
    return subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_two_sweeps_at_once_share_one_postgresql_study(tmp_path, postgres_url):
    # nothing is created beforehand: both sweeps start on an empty database (uvav.hydra_callbacks makes its tables)
    sweeps = {name: _sweep(tmp_path, postgres_url, name, seed) for name, seed in (("a", 123), ("b", 124))}
    finished = []
    while len(finished) < len(sweeps):
        for name, proc in sweeps.items():
            if name not in finished and proc.poll() is not None:
                finished.append(name)
        time.sleep(0.1)
    for name, proc in sweeps.items():
        out = proc.stdout.read()
        assert proc.returncode == 0, f"sweep {name} failed:\n{out[-3000:]}"

    study = optuna.load_study(study_name=STUDY, storage=postgres_url)  # a reader on another machine
    trials = study.trials
    assert len(trials) == 6 and sorted(t.number for t in trials) == list(range(6))  # each once, none lost
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)

    jobs = [json.loads(p.read_text()) for p in tmp_path.glob("[ab]/*/metrics.json")]
    assert len(jobs) == 6
    def key(length, lr, value):
        return (int(length), float(lr), round(float(value), 12))

    assert Counter(key(t.params["prompt.length"], t.params["method.lr"], t.value) for t in trials) == Counter(
        key(m["config"]["prompt"]["length"], m["config"]["method"]["lr"], m["objective"]["value"]) for m in jobs)

    assert study.best_value == max(m["objective"]["value"] for m in jobs)
    last = yaml.safe_load((tmp_path / finished[-1] / "optimization_results.yaml").read_text())
    assert last["best_value"] == study.best_value  # what the last sweep to finish reported is what a reader sees
    assert {k: float(v) for k, v in last["best_params"].items()} == {
        k: float(v) for k, v in study.best_params.items()}
