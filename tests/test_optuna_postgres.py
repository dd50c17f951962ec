"""One Optuna search shared by several machines: a real PostgreSQL server on 127.0.0.1, two sweep processes at once
against one study (`.ci/run` installs Debian's server; without it the test skips, and fails under CI=true)."""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import signal
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
N_TRIALS = 3  # per sweep process
SEEDS = {"a": 123, "b": 124}  # sweep folder -> sampler seed (one per machine, as the README says)
# TINY, except that the FT model (trained once, shared through the job cache) and the prompts learn enough for the
# trials' objectives to differ: with TINY's single epochs every trial scores chance and the best trial is any trial
FAST = [*(o for o in TINY if not o.startswith(("trainer.epochs=", "method.epochs="))), "trainer.epochs=3",
        "trainer.lr=0.003", "method.epochs=3", "trainer.num_threads=1"]


def _server_bin() -> Path | None:
    """Debian's PostgreSQL server programs (initdb, pg_ctl), newest version first; else initdb on PATH."""
    def version(initdb: str) -> list[int]:
        return [int(n) for n in re.findall(r"\d+", Path(initdb).parts[-3])]

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
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
    """A throw-away server (trust authentication, 127.0.0.1 only) with an empty database ``uvav``; stopped
    afterwards, also when the test fails."""
    bindir = _server_bin()
    if bindir is None:
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL server programs not found: .ci/run installs Debian's postgresql package")
        pytest.skip("PostgreSQL server programs not found (Debian: apt-get install postgresql)")
    import psycopg  # SQLAlchemy 2.1's default PostgreSQL driver (psycopg 3; the dev extra, uvav[postgres] for users)

    # the server refuses to run as root: then it runs as the postgres system user, in a folder it owns (outside
    # pytest's root-only temporary folders)
    folder = Path(tempfile.mkdtemp(prefix="uvav-postgres-"))
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    data, port = folder / "data", _free_port()

    def pg(*args: str) -> None:
        proc = subprocess.run([*as_user, *args], capture_output=True, text=True, timeout=120)
        log = folder / "server.log"
        assert proc.returncode == 0, (f"{Path(args[0]).name} failed:\n{proc.stdout}\n{proc.stderr}\n"
                                      f"{log.read_text()[-2000:] if log.exists() else ''}")

    try:
        if as_user:
            shutil.chown(folder, "postgres")
        pg(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
        pg(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-w", "-t", "60", "start",
           "-o", f"-p {port} -c listen_addresses=127.0.0.1 -k {folder} -c fsync=off")
        connection = psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
        connection.autocommit = True
        connection.cursor().execute("CREATE DATABASE uvav")
        connection.close()
        yield f"postgresql://postgres@127.0.0.1:{port}/uvav"
    finally:
        if (data / "postmaster.pid").exists():
            pg(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


def _sweep(tmp_path: Path, url: str, name: str) -> subprocess.Popen:
    """One machine's sweep process: its own sweep folder and sampler seed; the shared study and job cache (a shared
    file system on a cluster: a configuration both draw is trained once, and reused by the other)."""
    cmd = [sys.executable, "-m", "uvav.run", "-m", "hparams_search=prompt_length", f"hydra.sweeper.storage={url}",
           f"hydra.sweeper.n_trials={N_TRIALS}", f"hydra.sweeper.sampler.seed={SEEDS[name]}", SUBDIR, *FAST,
           f"hydra.sweep.dir={tmp_path / name}", f"paths.cache_dir={tmp_path / 'cache'}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}
    with open(tmp_path / f"{name}.log", "w") as log:  # a file, not a pipe: a full pipe would block the sweep
        return subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _job(folder: Path) -> tuple[int, float, float]:
    """A job folder's (prompt length, lr, objective): the parameters from the overrides the sweeper gave it."""
    overrides = dict(o.split("=", 1) for o in yaml.safe_load((folder / ".hydra" / "overrides.yaml").read_text()))
    metrics = json.loads((folder / "metrics.json").read_text())
    return int(overrides["prompt.length"]), float(overrides["method.lr"]), metrics["objective"]["value"]


def _params_value(params: dict, value: float) -> tuple[int, float, float]:
    return int(params["prompt.length"]), float(params["method.lr"]), value


@pytest.mark.slow
def test_two_sweeps_at_once_share_one_postgresql_study(tmp_path, postgres_url):
    # nothing is created beforehand: both sweeps start on an empty database (OptunaStorageCallback makes the tables)
    sweeps = {name: _sweep(tmp_path, postgres_url, name) for name in SEEDS}
    try:
        deadline = time.monotonic() + 300
        while any(proc.poll() is None for proc in sweeps.values()) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        for proc in sweeps.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    for name, proc in sweeps.items():
        assert proc.returncode == 0, f"sweep {name} failed ({proc.returncode}):\n" + (
            (tmp_path / f"{name}.log").read_text()[-4000:])

    study = optuna.load_study(study_name=STUDY, storage=postgres_url)  # a fresh reader, as on another machine
    trials = study.trials
    # every trial recorded once, none lost, none left running or failed
    assert sorted(t.number for t in trials) == list(range(2 * N_TRIALS)), [t.number for t in trials]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials), [t.state for t in trials]
    # the two sweeps worked on the study at the same time: both had asked for a trial before the first one ended
    first_end = min(t.datetime_complete for t in trials)
    assert sum(t.datetime_start < first_end for t in trials) >= 2, "the sweeps ran one after the other"

    jobs = {name: [_job(p.parent) for p in sorted((tmp_path / name).glob("*/metrics.json"))] for name in SEEDS}
    assert {name: len(found) for name, found in jobs.items()} == {name: N_TRIALS for name in SEEDS}
    every_job = [key for found in jobs.values() for key in found]
    # one to one: each job folder's parameters and objective are one trial's, and each trial is one job folder's
    assert Counter(_params_value(t.params, t.value) for t in trials) == Counter(every_job)

    best = max(value for *_, value in every_job)
    assert min(value for *_, value in every_job) < best, "every trial scored the same: the best trial is any trial"
    assert study.best_value == best
    assert _params_value(study.best_params, study.best_value) in every_job  # one of the best jobs (ties possible)

    # What each sweep reported when it ended. It read the study after its own last trial: its best is a trial of the
    # study, at least as good as its own jobs. The sweep that wrote its report last read the study after every trial
    # had ended (unless the other one's last trial, read and write all fell between its read and its write, a
    # window of about a millisecond), so it names the best trial a reader sees (any of the best when they tie).
    reports = {name: yaml.safe_load((tmp_path / name / "optimization_results.yaml").read_text()) for name in SEEDS}
    for name, report in reports.items():
        assert _params_value(report["best_params"], report["best_value"]) in every_job, (name, report)
        assert report["best_value"] >= max(value for *_, value in jobs[name]), (name, report)
    last = max(SEEDS, key=lambda name: (tmp_path / name / "optimization_results.yaml").stat().st_mtime_ns)
    assert reports[last]["best_value"] == study.best_value, (last, reports)


# Three sweeps starting at the same moment on a new database: each runs OptunaStorageCallback, as prompt_length.yaml
# has it (one with the storage as a config node, e.g. for engine_kwargs), then opens the study as the sweeper does.
# Without the callback's retry, all but one fail (here: in 6 of 6 tries).
_STARTER = """
import sys
from omegaconf import OmegaConf
from uvav.hydra_callbacks import OptunaStorageCallback
import optuna
url, node = sys.argv[1], sys.argv[2] == "node"
storage = {"_target_": "optuna.storages.RDBStorage", "url": url, "engine_kwargs": {"pool_pre_ping": True}}
config = OmegaConf.create({"hydra": {"sweeper": {"storage": storage if node else url}}})
print("ready", flush=True)
sys.stdin.readline()  # go
OptunaStorageCallback().on_multirun_start(config)
optuna.create_study(study_name="s", storage=url, direction="maximize", load_if_exists=True)
"""


@pytest.mark.slow
def test_sweeps_starting_at_once_make_the_tables_once(postgres_url):
    import psycopg

    server = postgres_url.rpartition("/")[0]
    connection = psycopg.connect(f"{server}/postgres")
    connection.autocommit = True
    connection.cursor().execute("CREATE DATABASE tables_race")
    connection.close()
    url = f"{server}/tables_race"
    procs = [subprocess.Popen([sys.executable, "-c", _STARTER, url, kind], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for kind in ("url", "url", "node")]
    try:
        ready = [proc.stdout.readline() for proc in procs]  # each has imported optuna and uvav
        for proc in procs:
            proc.stdin.write("go\n")
            proc.stdin.close()
        outputs = [proc.stdout.read() for proc in procs]
        codes = [proc.wait(timeout=120) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert ready == ["ready\n"] * 3 and codes == [0, 0, 0], "\n".join(
        f"{r}{out[-2000:]}" for r, out in zip(ready, outputs, strict=True))
    connection, counts = psycopg.connect(url), {}
    with connection.cursor() as cursor:
        for table in ("version_info", "alembic_version", "studies"):
            cursor.execute(f"SELECT count(*) FROM {table}")
            counts[table] = cursor.fetchone()[0]
    connection.close()
    assert counts == {"version_info": 1, "alembic_version": 1, "studies": 1}
