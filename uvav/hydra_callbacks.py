"""Hydra callbacks used by uvav's configs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class SweepDirCallback(Callback):
    """Create ``hydra.sweep.dir`` before the sweeper starts (an Optuna study's SQLite file lives there)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        Path(str(config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
