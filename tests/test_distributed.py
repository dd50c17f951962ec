"""One job on several processes (DDP over gloo on the CPU): the same training as one process, one set of files,
a killed rank fails the job and a relaunch resumes; Slurm tasks through submitit's environment; the presets."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from uvav import distributed
from uvav.config import config_dir

from .conftest import TINY, run_module, start_module

pytestmark = pytest.mark.slow

# 97 training samples in global batches of 24: the last batch has one sample, so one rank steps on a weight-0 row
SMALL = [*TINY, "data.num_train=97", "trainer.batch_size=24", "trainer.epochs=2", "method.epochs=2",
         "trainer.num_threads=1"]


def torchrun(cwd: Path, *args: str, nproc: int = 2, wait: bool = True):
    """``torchrun --nproc_per_node=N -m uvav.run ...`` in ``cwd`` (its outputs/ and cache under it)."""
    cwd.mkdir(parents=True, exist_ok=True)
    args = ("--standalone", f"--nproc_per_node={nproc}", "-m", "uvav.run", *args, f"paths.cache_dir={cwd / 'cache'}")
    if not wait:
        return start_module("torch.distributed.run", *args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    return run_module("torch.distributed.run", *args, cwd=cwd, check=False, fresh=True)


def plain(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    cwd.mkdir(parents=True, exist_ok=True)
    return run_module("uvav.run", *args, f"paths.cache_dir={cwd / 'cache'}", cwd=cwd, check=False)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def only_run(cwd: Path) -> Path:
    """The one run folder under ``cwd/outputs`` (every rank must have agreed on its name)."""
    runs = [p.parent for p in (cwd / "outputs").rglob(".hydra")]
    assert len(runs) == 1, runs
    return runs[0]


def test_two_processes_train_as_one_with_the_global_batch(tmp_path):
    # one process would cache frozen encoder outputs (different corruption draws); several stream every stage
    ok(plain(tmp_path / "one", "method=pl", "method.cache_features=off", *SMALL))
    ok(torchrun(tmp_path / "two", "method=pl", *SMALL))
    one, two = only_run(tmp_path / "one"), only_run(tmp_path / "two")
    assert sorted(p.relative_to(tmp_path / "two") for p in (tmp_path / "two").rglob("metrics.json")) == sorted(
        p.relative_to(tmp_path / "two") for p in [two / "metrics.json", *(tmp_path / "two/cache/jobs").glob(
            "*/metrics.json")])  # one in the run folder, one in the cache of finished jobs: rank 0's
    steps = [pd.read_csv(run / "curves" / "steps.csv") for run in (one, two)]
    for stage in ("ft", "head_only", "pl"):
        a, b = (s[s.stage == stage].reset_index(drop=True) for s in steps)
        assert len(a) == len(b) == 2 * 5  # 2 epochs of ceil(97 / 24) steps
        rel = ((a.train_loss - b.train_loss).abs() / a.train_loss.abs()).max()
        assert rel <= 1e-4, (stage, rel)
    m1, m2 = (json.loads((run / "metrics.json").read_text()) for run in (one, two))
    assert m2["distributed"] == {"world_size": 2, "backend": "gloo", "local_world_size": 2}
    for mode, cases in m1["accuracy"].items():
        for case, acc in cases.items():
            assert abs(acc - m2["accuracy"][mode][case]) <= 0.01, (mode, case)


def _rank_pid(launcher: subprocess.Popen, rank: int) -> int | None:
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"uvav.run" in cmdline and f"RANK={rank}".encode() in environ and pid != launcher.pid:
            return pid
    return None


def test_a_killed_rank_fails_the_job_and_a_relaunch_resumes_then_reuses(tmp_path):
    args = ["method=ft", *TINY, "data.num_train=128", "trainer.epochs=30", "method.epochs=30", "trainer.num_threads=1",
            "hydra.run.dir=run"]
    launcher = torchrun(tmp_path, *args, wait=False)
    deadline = time.time() + 120
    while not list((tmp_path / "cache" / "ft").glob("*/last.pt")) and time.time() < deadline:
        time.sleep(0.2)
    pid = _rank_pid(launcher, 1)
    assert pid is not None and launcher.poll() is None, "the job ended before a rank could be killed"
    os.kill(pid, signal.SIGKILL)
    out, _ = launcher.communicate(timeout=120)
    assert launcher.returncode != 0
    assert "ChildFailedError" in out and "rank      : 1" in out and "SIGKILL" in out, out[-2000:]
    assert not (tmp_path / "run" / "metrics.json").exists()

    ok(torchrun(tmp_path, *args))
    log = (tmp_path / "run" / "run.log").read_text()
    assert "ft: resumed from" in log
    info = json.loads(next((tmp_path / "cache" / "ft").glob("*/info.json")).read_text())
    assert [h["epoch"] for h in info["history"]] == list(range(30))

    ok(torchrun(tmp_path, *args))  # the same job again: found, not trained
    assert "reusing the finished job" in (tmp_path / "run" / "run.log").read_text()
    pl = ok(torchrun(tmp_path, *[a for a in args if a != "method=ft"], "method=pl", "hydra.run.dir=pl"))
    assert "FT model" in pl.stdout + pl.stderr and "reused from" in (tmp_path / "pl" / "run.log").read_text()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_slurm_tasks_join_through_submitits_environment(tmp_path):
    """Two processes with the variables Slurm sets for a job of 2 tasks started by submitit (no torchrun)."""
    slurm = {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "4242", "SLURM_NTASKS": "2", "SLURM_JOB_NUM_NODES": "1",
             "SLURM_NODEID": "0", "SLURM_JOB_NODELIST": "localhost", "MASTER_PORT": str(_free_port())}
    tasks = [start_module("uvav.run", "method=ft", *SMALL, f"paths.cache_dir={tmp_path / 'cache'}", cwd=tmp_path,
                          env={**slurm, "SLURM_PROCID": str(r), "SLURM_LOCALID": str(r)}, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
             for r in range(2)]
    outs = [task.communicate(timeout=300)[0] for task in tasks]
    assert [task.returncode for task in tasks] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    metrics = json.loads((only_run(tmp_path) / "metrics.json").read_text())
    assert metrics["distributed"]["world_size"] == 2


def test_distributed_refuses_what_it_cannot_run(tmp_path):
    proc = torchrun(tmp_path, "method=pretrain", *SMALL)
    assert proc.returncode != 0
    assert "method=pretrain runs in one process" in proc.stdout + proc.stderr


@pytest.mark.parametrize(("n", "world"), [(97, 2), (100, 3), (5, 4), (48, 2)])
def test_batch_parts_split_every_global_batch_once(monkeypatch, n, world):
    order = list(range(n))[::-1]
    parts = []
    for r in range(world):
        monkeypatch.setattr(distributed, "rank", lambda r=r: r)
        monkeypatch.setattr(distributed, "world_size", lambda: world)
        parts.append(distributed.batch_parts(order, 24))
    for step in range(len(parts[0])):
        batch = order[step * 24:(step + 1) * 24]
        real = [(rows, w) for rows, w in (p[step] for p in parts) if w > 0]
        assert sorted(i for rows, _ in real for i in rows) == sorted(batch)  # each sample once, on one rank
        assert sum(len(rows) * world / len(batch) for rows, _ in real) == pytest.approx(world)
        assert all(w == pytest.approx(len(rows) * world / len(batch)) for rows, w in real)
        assert all(len(p[step][0]) >= 1 for p in parts)  # every rank steps


def test_slurm_ddp_preset_gives_one_task_per_gpu():
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm_ddp", "hydra.launcher.gpus_per_node=8"],
                      return_hydra_config=True)
    launcher = instantiate(cfg.hydra.launcher)
    assert launcher.params["tasks_per_node"] == launcher.params["gpus_per_node"] == 8
    assert type(launcher).__name__ == "SlurmLauncher"
