"""Finished jobs on disk: where they are, and what makes one usable, in one place.

Reporting (:mod:`uvav.reporting`) reads jobs through :func:`read_jobs`; job reuse (``uvav.run``) asks
:func:`read_finished`; :func:`uvav.load_run` asks :func:`metrics_problem` (after checking the run's own files); the
record itself is read by :func:`uvav.record.read_record`. A job is usable when its ``metrics.json`` is a
completed job's (status ``completed``, an ``accuracy`` table with the FT model's row, a finite objective), of this
uvav's schema version, and not stale (its overrides are those of the folder's ``.hydra/overrides.yaml``); for reuse
and rebuilding, ``model.pt`` must be there too. Job reuse further checks the model's sha256 and the data's content
digest against the record (:func:`uvav.execution.reusable_job`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from uvav.methods import FT
from uvav.record import SCHEMA_VERSION, RecordError, read_record


@dataclass
class Job:
    """One job folder: its metrics (when usable) or the reason it is not."""

    path: Path
    metrics: dict[str, Any] | None = None
    reason: str | None = None
    overrides: list[str] = field(default_factory=list)
    choices: dict[str, Any] = field(default_factory=dict)


def find_job_dirs(roots: list[Path]) -> list[Path]:
    """Folders holding ``.hydra/`` or ``metrics.json`` under ``roots`` (not descending into a job folder)."""
    found: list[Path] = []
    for root in roots:
        for current, dirnames, filenames in os.walk(root):
            if ".hydra" in dirnames or "metrics.json" in filenames:
                found.append(Path(current))
                dirnames[:] = []
            else:
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    return sorted(set(found))


def read_jobs(roots: list[Path]) -> list[Job]:
    """Every job folder under ``roots`` (:func:`find_job_dirs`), read (:func:`read_job`): how reporting reads jobs."""
    return [read_job(folder) for folder in find_job_dirs(roots)]


def _load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def group_choices(choices: dict[str, Any]) -> dict[str, Any]:
    """A job's config-group choices without Hydra's own, without ``method_recipe`` (derived from the experiment
    and method choices) and without ``logger`` (where curves go cannot make another experiment)."""
    return {k: v for k, v in choices.items() if not str(k).startswith(("hydra", "method_recipe", "logger"))}


def read_job(path: Path) -> Job:
    """Read one job folder; ``reason`` says why it cannot be used (``None`` when it can)."""
    job = Job(path)
    overrides = _load_yaml(path / ".hydra" / "overrides.yaml")
    job.overrides = [str(o) for o in overrides] if isinstance(overrides, list) else []
    hydra_cfg = _load_yaml(path / ".hydra" / "hydra.yaml")
    choices = (((hydra_cfg or {}).get("hydra") or {}).get("runtime") or {}).get("choices") or {}
    job.choices = group_choices(choices)
    job.metrics, job.reason = read_finished(path, job.overrides)
    return job


def read_finished(folder: Path, overrides: list[str] | None = None, need_model: bool = False,
                  pretraining_ok: bool = False) -> tuple[dict[str, Any] | None, str | None]:
    """``(metrics, None)`` for a usable finished job, ``(None, why not)`` otherwise. ``overrides``: the folder's own
    (a ``metrics.json`` with others is stale); ``need_model``: ``model.pt`` must be there too; ``pretraining_ok``:
    a pretraining job (no accuracy, a backbone checkpoint) is usable too (job reuse)."""
    file = folder / "metrics.json"
    if not file.exists():
        partial = sorted(folder.glob(".metrics.json.*.tmp"))
        hint = "; a partial .metrics.json.*.tmp is there (killed while writing)" if partial else ""
        return None, f"no metrics.json (not finished: failed, killed or still running){hint}{_last_error(folder)}"
    try:
        metrics = read_record(file).to_dict()
    except RecordError as error:
        return None, str(error)
    problem = metrics_problem(metrics, overrides, pretraining_ok)
    if problem is None and need_model and not (folder / "model.pt").is_file():
        problem = "no model.pt beside metrics.json (the saved model is missing)"
    return (None, problem) if problem else (metrics, None)


def metrics_problem(metrics: Any, overrides: list[str] | None = None, pretraining_ok: bool = False) -> str | None:
    """Why a ``metrics.json`` content is not a usable finished job's (``None`` when it is); a pretraining job's is
    usable only with ``pretraining_ok``."""
    if not isinstance(metrics, dict):
        return "metrics.json is not a JSON object"
    if metrics.get("status") != "completed":
        return f"status is {metrics.get('status')!r}, not 'completed'"
    version = metrics.get("schema_version")
    if version != SCHEMA_VERSION:
        return f"schema_version {version!r}: this uvav reads version {SCHEMA_VERSION}"
    accuracy = metrics.get("accuracy")
    if isinstance(metrics.get("pretraining"), dict):
        if not pretraining_ok:
            return ("a pretraining job: no classifier and no accuracy; its model.pt is a backbone checkpoint "
                    "(backbone.checkpoint=<job>/model.pt)")
    elif not isinstance(accuracy, dict) or not isinstance(accuracy.get(metrics.get("main_mode", FT)), dict):
        return f"metrics.json has no accuracy.{metrics.get('main_mode', FT)} table (its main_mode)"
    objective = (metrics.get("objective") or {}).get("value")
    if not isinstance(objective, (int, float)) or not math.isfinite(objective):
        return f"objective is {objective!r} (the job raised: a failed job / Optuna trial)"
    if overrides and "overrides" in metrics and sorted(metrics["overrides"]) != sorted(overrides):
        return "stale metrics.json: its overrides differ from .hydra/overrides.yaml (folder reused by a later job)"
    return None


def _last_error(path: Path) -> str:
    """The last ERROR line of the job's log, if any."""
    for log in sorted(path.glob("*.log")):
        try:
            lines = [line for line in log.read_text(errors="replace").splitlines() if "ERROR" in line]
        except OSError:
            continue
        if lines:
            return f"; log: {lines[-1].strip()[-200:]}"
    return ""
