"""Hydra callbacks used by uvav's configs."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.experimental.callback import Callback
from hydra.utils import instantiate
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class SweepDirCallback(Callback):
    """Create ``hydra.sweep.dir`` before the sweeper starts (an Optuna study's SQLite file lives there)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        Path(str(config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)


class OptunaStorageCallback(Callback):
    """Create the tables of an Optuna database server before the sweeper opens it. Sweeps started at once on several
    machines against a new database would all create them, and all but one fail (PostgreSQL: a unique violation
    on ``pg_type`` or ``alembic_version``); here a process that loses that race retries and finds the tables made.
    (Two processes creating the same study at once are handled by Optuna: one creates it, the other loads it.)"""

    attempts = 5

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        storage = config.hydra.sweeper.get("storage")
        if isinstance(storage, DictConfig) and "_target_" in storage:  # e.g. an RDBStorage with engine_kwargs
            spec: Any = storage
        elif isinstance(storage, str) and storage and not storage.startswith("sqlite"):
            spec = {"_target_": "optuna.storages.RDBStorage", "url": storage}
        else:  # none, or SQLite: a file that one machine opens
            return
        from sqlalchemy.exc import IntegrityError, ProgrammingError

        for attempt in range(1, self.attempts + 1):
            try:
                instantiate(spec)  # RDBStorage makes the tables it does not find
                return
            except Exception as error:
                cause = error.__cause__ if isinstance(error, InstantiationException) else error
                if attempt == self.attempts or not isinstance(cause, (IntegrityError, ProgrammingError)):
                    raise
                # another process was creating the same tables
                log.info("Optuna storage: tables created concurrently (%s); retrying", type(cause).__name__)
                time.sleep(0.5 * attempt)
