"""What an experiment tracker (MLflow, W&B) is told about a job: :class:`TrackedRun` (its name, its resolved config
with secrets masked, uvav's group key and its sweep), and where a tracker's run id is kept for a resume."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uvav.config import grouping_settings
from uvav.loggers.base import CURVES

MASK = "***"
SECRET_KEY = re.compile(r"pass(word)?|secret|token|api_?key|credential", re.IGNORECASE)
URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^/:@\s]*:)(?P<password>[^@\s/]+)(?=@)", re.IGNORECASE)


@dataclass(frozen=True)
class TrackedRun:
    """A job as a tracker sees it. ``group``: uvav's group key (the ``group`` column of ``uvav.aggregate``'s tables:
    the job's config without seed and runtime settings); ``sweep``: the multirun folder, None for a single run."""

    job_dir: Path
    name: str
    config: dict[str, Any]
    group: str
    sweep: str | None = None

    def tags(self) -> dict[str, str]:
        tags = {"uvav.group": self.group, "uvav.job_dir": str(self.job_dir)}
        return {**tags, "uvav.sweep": self.sweep} if self.sweep else tags


def describe_run(config: dict[str, Any], job_dir: Path, sweep: str | None = None) -> TrackedRun:
    """The :class:`TrackedRun` of a job with this resolved ``config`` (a plain dict) in ``job_dir``."""
    job_dir = Path(job_dir).resolve()
    return TrackedRun(job_dir, job_dir.name, mask_secrets(config), group_key(config), sweep)


def tracked_run(cfg: Any, job_dir: Path) -> TrackedRun:
    """The :class:`TrackedRun` of the job that Hydra composed as ``cfg`` (a DictConfig), in ``job_dir``."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    hydra = HydraConfig.get() if HydraConfig.initialized() else None
    sweep = str(Path(hydra.sweep.dir).resolve()) if hydra and hydra.mode == RunMode.MULTIRUN else None
    return describe_run(OmegaConf.to_container(cfg, resolve=True), job_dir, sweep)


def group_key(config: dict[str, Any]) -> str:
    """uvav's group key of a resolved config: what ``uvav.aggregate`` puts in its ``group`` column."""
    from uvav.outputs import fingerprint

    return fingerprint(grouping_settings(config))[:8]


def mask_secrets(obj: Any, key: str = "") -> Any:
    """A copy with the values of secret-looking keys (password, token, api key, ...) and the passwords in URLs
    (``postgresql://user:PASSWORD@host``) replaced by ``***``: what a tracker is given is never a secret."""
    if isinstance(obj, dict):
        return {k: mask_secrets(v, str(k)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [mask_secrets(v, key) for v in obj]
    if obj is not None and SECRET_KEY.search(key):
        return MASK
    return URL_PASSWORD.sub(rf"\g<head>{MASK}", obj) if isinstance(obj, str) else obj


def run_id_file(job_dir: Path, tracker: str) -> Path:
    """Where a tracker's run id is kept: a job started again in the same folder continues that run."""
    return Path(job_dir) / CURVES / f"{tracker}_run_id"


def saved_run_id(job_dir: Path, tracker: str) -> str | None:
    path = run_id_file(job_dir, tracker)
    return path.read_text(encoding="utf-8").strip() or None if path.exists() else None


def save_run_id(job_dir: Path, tracker: str, run_id: str) -> None:
    path = run_id_file(job_dir, tracker)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(run_id + "\n", encoding="utf-8")
