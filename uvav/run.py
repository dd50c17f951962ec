"""The one entrypoint: ``python -m uvav.run [-m] [group=option ...] [key=value ...]``.

Compose the config (Hydra), check it, run the job's pipeline, write ``metrics.json`` and return the
objective for sweepers.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import sys
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from uvav import distributed
from uvav.config import JOB_KEY_NEUTRAL, ConfigError, config_dir, key_content, register_configs, validate
from uvav.errors import report_user_errors, run_entrypoint
from uvav.jobs import group_choices, read_finished
from uvav.loggers import finish_trackers
from uvav.models import MODEL_VERSION
from uvav.models.zoo import content_key
from uvav.outputs import (
    SCHEMA_VERSION,
    atomic_write_json,
    copy_hashed,
    environment,
    file_lock,
    fingerprint,
)
from uvav.pipeline import data_digest, open_data, run_pipeline

log = logging.getLogger("uvav.run")
register_configs()


def _remove_if_only_hydra_files(job_dir: Path) -> None:
    """Undo the folder Hydra made for a job that was rejected before doing anything."""
    own = {".hydra", "run.log", f"{HydraConfig.get().job.name}.log"}
    if job_dir.is_dir() and all(p.name in own for p in job_dir.iterdir()):
        shutil.rmtree(job_dir)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
@report_user_errors  # a user error: one line `uvav: ...`, exit 2 (uvav/errors.py)
def main(cfg: DictConfig) -> float:
    distributed.setup()  # a no-op unless torchrun or a multi-task Slurm job started this process
    hydra_cfg = HydraConfig.get()
    job_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        validate(cfg)
        _check_distributed(cfg, hydra_cfg)
    except ConfigError:
        if distributed.is_main():
            _remove_if_only_hydra_files(job_dir)
        raise
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
        atomic_write_json(job_dir / "metrics.json", metrics)
        finish_trackers(job_dir, metrics)  # logger=mlflow/wandb: the run completed, metrics.json attached
        _log_table(metrics)
    value = float(distributed.from_main(metrics["objective"]["value"] if main_rank else None))
    if not math.isfinite(value):
        raise FloatingPointError(f"objective {cfg.objective} is {value}: reported as a failed job")
    return value


def _check_distributed(cfg: DictConfig, hydra_cfg) -> None:
    """A distributed launch runs jobs whose sequence every rank knows in advance: a sweeper that picks each next
    trial itself (Optuna) would send the ranks different configs."""
    if distributed.world_size() == 1:
        return
    if "optuna" in str(hydra_cfg.sweeper.get("_target_", "")).lower():
        raise ConfigError("an Optuna search cannot run inside a distributed launch (each rank would ask the study "
                          "for its own trials): run the search without torchrun, or one torchrun per trial")
    if cfg.method.get("cache_features") == "on":
        raise ConfigError("method.cache_features=on: a distributed job streams every stage (each rank would need "
                          "the whole cache of encoder outputs); use auto or off")
    if cfg.method.name == "pretrain":
        raise ConfigError("method=pretrain runs in one process (its contrastive loss and BatchNorm heads would see "
                          "only each rank's part of a batch); launch it without torchrun")


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
    atomic_write_json(finished / "metrics.json", metrics)
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


def _log_table(metrics: dict) -> None:
    if "pretraining" in metrics:
        final = metrics["pretraining"]["final"]
        log.info("pretraining, last epoch: %s", ", ".join(f"{k} {v:.4f}" for k, v in final.items() if k != "epoch"))
        return
    modes = list(metrics["accuracy"])
    cases = list(next(iter(metrics["accuracy"].values())))
    lines = [f"test {metrics.get('metric', 'accuracy')}", f"{'case':<14}" + "".join(f"{m:>14}" for m in modes)]
    for case in cases:
        cells = "".join(f"{metrics['accuracy'][m].get(case, float('nan')):>14.3f}" for m in modes)
        lines.append(f"{case:<14}{cells}")
    log.info("\n".join(lines))


def _quiet_other_ranks() -> None:
    """Under torchrun, ranks but 0 write no ``.hydra`` folder or log file and print only warnings (rank 0 does)."""
    if int(os.environ.get("RANK", "0")) > 0:
        sys.argv += ["hydra.output_subdir=null", "hydra/job_logging=none"]


if __name__ == "__main__":
    _quiet_other_ranks()
    run_entrypoint(main)
