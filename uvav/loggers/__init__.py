"""Training curves and experiment trackers: what every stage reports per optimiser step and per epoch, and where it
goes (group ``conf/logger``; several at once: ``logger.name=[csv,mlflow]``).

Interface used by :func:`uvav.train.fit` (and :mod:`uvav.pretraining`): ``step`` after every optimiser step
(``train_loss``, ``lr``), ``epoch`` after every epoch (``train_loss``, ``lr``, ``time_s``, ``val_acc`` and
``val_<case>`` per training case; pretraining: its losses, ``lr``, ``time_s``). Only rank 0 of a distributed job
logs. Files go under ``<job_dir>/curves/``:

- ``csv`` (:mod:`uvav.loggers.files`): ``steps.csv`` (wide: ``stage,epoch,step,train_loss,lr``, ``step`` 0-based
  within the epoch) and ``epochs.csv`` (tidy: ``stage,epoch,metric,value``), appended and flushed row by row.
- ``tensorboard``: ``tensorboard/<stage>/`` event files, tags ``<stage>/train_loss``, ``<stage>/lr`` per global step
  (``epoch * steps per epoch + step``), ``<stage>/epoch/<metric>`` per epoch.
- ``mlflow`` (:mod:`uvav.loggers.mlflow_logger`) and ``wandb`` (:mod:`uvav.loggers.wandb_logger`): a run per job;
  :func:`finish_trackers` completes it once ``metrics.json`` is written.

A job relaunched into the same folder resumes from its last finished epoch and logs the epoch that was in progress
again: readers keep the **last** row per (stage, epoch, step) and per (stage, epoch, metric), as :func:`read_curves`
does; the trackers continue the same run. This module imports no torch, pandas, mlflow or wandb: config validation
asks :func:`logger_problem` before any work.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uvav.loggers.base import CURVES, STEP_METRICS, Loggers, TrainingLogger
from uvav.loggers.curves import read_curves
from uvav.loggers.files import EPOCH_COLUMNS, STEP_COLUMNS, CsvLogger, TensorBoardLogger
from uvav.loggers.tracking import TrackedRun, describe_run, tracked_run


@dataclass(frozen=True)
class LoggerKind:
    """A ``logger.name`` value: the package it needs (None: none) and the extra that installs it."""

    module: str | None = None
    extra: str | None = None


LOGGERS: dict[str, LoggerKind] = {
    "csv": LoggerKind(),
    "tensorboard": LoggerKind("tensorboard", "tensorboard"),
    "mlflow": LoggerKind("mlflow", "mlflow"),  # experiment trackers: a run per job, completed by finish_trackers
    "wandb": LoggerKind("wandb", "wandb"),
    "none": LoggerKind(),
}
_OPEN_TRACKERS: dict[Path, list[Any]] = {}  # job folder -> its tracker loggers, closed but not yet finished


def logger_names(settings: Any) -> list[str]:
    """The loggers a ``logger`` config section names: ``name`` is one name or a list (``none``: no logger)."""
    if settings is None:
        return []
    name = settings.get("name") if hasattr(settings, "get") else None
    names = [name] if isinstance(name, str) or name is None else list(name)
    return [str(n) for n in dict.fromkeys(names) if n not in (None, "none")]


def chosen_loggers(default: str) -> Any:
    """The ``uvav_loggers`` resolver of ``conf/logger/*.yaml``'s ``name``: the list that ``logger=[csv,mlflow]``
    selected on the command line (Hydra merges those files, so each one's own ``name`` would leave only the last,
    and it records no choice for such a list), else ``default``: the file's own logger."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if not HydraConfig.initialized():  # a config composed without Hydra's runtime (the API, the tests)
        return default
    chosen = [o for o in HydraConfig.get().overrides.task if o.partition("=")[0].lstrip("+~") == "logger"]
    value = OverridesParser.create().parse_override(chosen[-1]).value() if chosen else None
    return [str(v) for v in value] if isinstance(value, list) else default


def logger_problem(settings: Any) -> str | None:
    """Why the ``logger`` section cannot run here (an unknown name, a package not installed); None when it can."""
    for name in logger_names(settings):
        kind = LOGGERS.get(name)
        if kind is None:
            return f"logger.name={name!r}: one of {list(LOGGERS)} (several: logger.name=[csv,mlflow])"
        if kind.module and importlib.util.find_spec(kind.module) is None:
            return f"logger={name} needs the {kind.module} package: pip install 'uvav[{kind.extra}]'"
        problem = tensorboard_problem() if name == "tensorboard" else None
        if problem:
            return problem
    return None


def tensorboard_problem() -> str | None:
    """Why ``logger=tensorboard`` cannot run here (``None`` when it can)."""
    try:
        import torch.utils.tensorboard  # noqa: F401  (imports the tensorboard package and checks its version)
    except ImportError as error:
        return f"logger=tensorboard needs the tensorboard package: pip install 'uvav[tensorboard]' ({error})"
    return None


def open_logger(settings: Any, job_dir: Path, enabled: bool = True, run: TrackedRun | None = None) -> TrainingLogger:
    """The loggers the ``logger`` section ``settings`` names, writing into ``<job_dir>/curves`` (trackers: their run
    described by ``run``, default: the job folder alone); a dropping one when not ``enabled``."""
    names = logger_names(settings) if enabled else []
    problem = logger_problem(settings) if names else None
    if problem:
        raise ImportError(problem)
    folder, log_steps = Path(job_dir) / CURVES, bool(settings.get("log_steps", True)) if names else True
    loggers: list[TrainingLogger] = []
    for name in names:
        if name == "csv":
            loggers.append(CsvLogger(folder, log_steps))
        elif name == "tensorboard":
            loggers.append(TensorBoardLogger(folder / "tensorboard", log_steps))
        else:
            tracker = _open_tracker(name, settings.get(name) or {}, run or describe_run({}, Path(job_dir)), log_steps)
            _OPEN_TRACKERS.setdefault(tracker.run.job_dir, []).append(tracker)
            loggers.append(tracker)
    return loggers[0] if len(loggers) == 1 else Loggers(loggers) if loggers else TrainingLogger()


def _open_tracker(name: str, settings: Any, run: TrackedRun, log_steps: bool) -> Any:
    if name == "mlflow":
        from uvav.loggers.mlflow_logger import MlflowLogger

        return MlflowLogger(settings, run, log_steps)
    from uvav.loggers.wandb_logger import WandbLogger

    return WandbLogger(settings, run, log_steps)


def finish_trackers(job_dir: Path, metrics: dict[str, Any]) -> None:
    """Complete the tracker runs of the job in ``job_dir`` once its ``metrics.json`` is written (rank 0)."""
    for tracker in _OPEN_TRACKERS.pop(Path(job_dir).resolve(), []):
        tracker.finish(metrics)


__all__ = ["CURVES", "EPOCH_COLUMNS", "LOGGERS", "STEP_COLUMNS", "STEP_METRICS", "CsvLogger", "Loggers",
           "TensorBoardLogger", "TrackedRun", "TrainingLogger", "chosen_loggers", "describe_run", "finish_trackers",
           "logger_names", "logger_problem", "open_logger", "read_curves", "tensorboard_problem", "tracked_run"]
