"""Running one job once: its key, the reuse of a finished job with the same key (verified by content), a fresh
run of its pipeline, and storing the result under ``paths.cache_dir/jobs/<key>`` for the next identical job."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from uvav import distributed
from uvav.config import JOB_KEY_NEUTRAL, key_content
from uvav.jobs import group_choices, read_finished
from uvav.models import MODEL_VERSION
from uvav.outputs import copy_hashed, environment, file_lock, fingerprint
from uvav.pipeline import data_digest, open_data, run_pipeline
from uvav.record import SCHEMA_VERSION, write_record
from uvav.weights.zoo import content_key

log = logging.getLogger("uvav.run")


def run_job(cfg: DictConfig, job_dir: Path) -> dict:
    """The job's metrics (every rank gets them; rank 0 alone takes the lock, decides on reuse and writes
    ``metrics.json``): the finished job's with the same key, or a fresh run's."""
    hydra_cfg = HydraConfig.get()
    main_rank = distributed.is_main()  # rank 0 alone takes the lock, decides on reuse and writes
    choices = group_choices(hydra_cfg.runtime.choices)
    key = job_key(cfg)
    finished = Path(cfg.paths.cache_dir).expanduser() / "jobs" / key
    # the same job twice at once: the second waits, then reuses
    with file_lock(finished.with_suffix(".lock")) if main_rank else contextlib.nullcontext():
        metrics = None
        if cfg.reuse_finished and main_rank:
            metrics = reusable_job(cfg, finished, job_dir)
        if distributed.from_main(metrics is not None):
            if main_rank:
                log.info("reusing the finished job with the same config and data (%s)", finished)
                metrics = {**metrics, "reused_from": metrics.get("job_dir"),
                           "overrides": list(hydra_cfg.overrides.task)}
        else:
            metrics = _run_fresh(cfg, job_dir, choices, key, finished)
            if main_rank:
                store_finished(metrics, job_dir, finished)
    if main_rank:
        metrics["job_dir"] = str(job_dir.resolve())
        write_record(job_dir / "metrics.json", metrics)  # refuses a key that is not in uvav/record.py
    return metrics


def job_key(cfg: DictConfig) -> str:
    """What identifies a job's result: the resolved config without settings that cannot change it (and a local
    checkpoint file by its content)."""
    container = key_content(OmegaConf.to_container(cfg, resolve=True), JOB_KEY_NEUTRAL)
    return fingerprint({"schema": SCHEMA_VERSION, "model_version": MODEL_VERSION, "config": container,
                        **content_key(cfg.backbone.checkpoint)})


def reusable_job(cfg: DictConfig, finished: Path, job_dir: Path) -> dict | None:
    """The finished job's record when it may be reported again: usable (:func:`uvav.jobs.read_finished`), its
    ``model.pt`` still the bytes recorded when it was written (copied into ``job_dir`` by the same read), and its
    data's content digest the current data's. Otherwise None, with a WARNING saying why (the job then runs again).
    Opening the data is what a reuse costs; data that is gone fails there with the dataset's own error."""
    metrics = read_finished(finished, need_model=True, pretraining_ok=True)[0]
    if metrics is None:
        return None
    problem = None
    if not metrics.get("model_sha256") or not metrics.get("data_digest"):
        problem = "it was stored before uvav recorded content hashes"
    elif copy_hashed(finished / "model.pt", job_dir / "model.pt") != metrics["model_sha256"]:
        problem = f"{finished / 'model.pt'} does not match the sha256 recorded when it was written (edited or damaged)"
    else:
        current = data_digest(open_data(cfg).info)
        if current != metrics["data_digest"]:
            problem = f"its data changed since (content digest {metrics['data_digest']}, now {current})"
    if problem:
        (job_dir / "model.pt").unlink(missing_ok=True)
        log.warning("not reusing the finished job %s: %s; training it again", finished, problem)
        return None
    return metrics


def store_finished(metrics: dict, job_dir: Path, finished: Path) -> None:
    """Copy the job's model into the cache (a file of its own: editing the run's copy cannot reach it), record its
    sha256 and the data digest, then publish the record; drop the stage checkpoints."""
    metrics["model_sha256"] = copy_hashed(job_dir / "model.pt", finished / "model.pt")
    metrics["data_digest"] = data_digest(metrics.get("data_info"))
    write_record(finished / "metrics.json", metrics)
    for partial in finished.glob("last_*.pt*"):
        partial.unlink()


def _run_fresh(cfg: DictConfig, job_dir: Path, choices: dict, key: str, resume_dir: Path) -> dict:
    hydra_cfg = HydraConfig.get()
    metrics = run_pipeline(cfg, job_dir, resume_dir)
    metrics.update({
        "schema_version": SCHEMA_VERSION, "status": "completed", "choices": choices,
        "overrides": list(hydra_cfg.overrides.task), "seed": cfg.seed, "method": cfg.method.name,
        "train_cases": list(cfg.scenario.train_cases), "config": OmegaConf.to_container(cfg, resolve=True),
        "environment": environment(torch.device(metrics["device"])), "distributed": distributed.describe(),
        "job_key": key,
        "job_dir": str(job_dir.resolve()),
    })
    return metrics
