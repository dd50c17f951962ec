"""Hydra callbacks used by uvav's configs."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class SweepDirCallback(Callback):
    """Create ``hydra.sweep.dir`` before the sweeper starts (an Optuna study's SQLite file lives there)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        Path(str(config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)


class OptunaStorageCallback(Callback):
    """Create the tables of an Optuna database server before the sweeper opens it. Sweeps started at once on several
    machines against a new database would all create them, and all but one fail (PostgreSQL: a unique violation
    on ``pg_type``); here a process that loses that race retries and finds the tables made."""

    attempts = 5

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        url = str(config.hydra.sweeper.get("storage") or "")
        if not url or url.startswith("sqlite"):
            return
        import optuna
        from sqlalchemy.exc import IntegrityError, ProgrammingError

        for attempt in range(1, self.attempts + 1):
            try:
                optuna.storages.RDBStorage(url)
                return
            except (IntegrityError, ProgrammingError) as error:  # another process created the same tables
                if attempt == self.attempts:
                    raise
                log.info("Optuna storage: tables created concurrently (%s); retrying", type(error).__name__)
                time.sleep(0.5 * attempt)
