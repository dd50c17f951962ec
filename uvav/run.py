"""The one entrypoint: ``python -m uvav.run [-m] [group=option ...] [key=value ...]``.

Compose the config (Hydra), check it, run the job (:mod:`uvav.execution`: once, or its finished result again),
log its table and return the objective for sweepers. Nothing heavy is imported before the config is checked, so a
bad override is refused in well under a second.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from uvav import distributed
from uvav.checks import register_configs, validate
from uvav.config import ConfigError, config_dir
from uvav.errors import report_user_errors, run_entrypoint
from uvav.loggers import finish_trackers
from uvav.methods import METHODS

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
    from uvav.execution import run_job  # torch and the pipeline: only once the config is known to be good

    metrics = run_job(cfg, job_dir)
    main_rank = distributed.is_main()
    if main_rank:
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
    problem = METHODS.get(cfg.method.name).not_distributed
    if problem:
        raise ConfigError(f"method={cfg.method.name} {problem}; launch it without torchrun")


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
