"""``logger=wandb``: a job is a Weights & Biases run (``wandb`` is imported only here, inside functions).

``logger.wandb.mode``: ``offline`` (default: nothing leaves the machine; ``wandb sync <run dir>`` uploads later) or
``online``. The run's files stay inside the job folder: ``<job_dir>/curves/wandb/<offline-run-...>/`` (the config,
the metrics in ``run-<id>.wandb``, ``files/wandb-summary.json``). The resolved config (secrets masked) is the run's
config; the W&B group is the sweep (its folder's name) or, for a single run, uvav's group key; per stage
``<stage>/train_loss`` and ``<stage>/lr`` against ``<stage>/step``, ``<stage>/epoch/<metric>`` against
``<stage>/epoch``. A job started again in the same folder continues the same run id (``curves/wandb_run_id``).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from uvav.loggers.base import CURVES, GlobalStepLogger
from uvav.loggers.tracking import TrackedRun, save_run_id, saved_run_id

TRACKER = "wandb"


class WandbLogger(GlobalStepLogger):
    def __init__(self, settings: Any, run: TrackedRun, log_steps: bool = True) -> None:
        import wandb

        super().__init__(log_steps)
        self.run = run
        folder = run.job_dir / CURVES
        folder.mkdir(parents=True, exist_ok=True)
        run_id = saved_run_id(run.job_dir, TRACKER) or uuid.uuid4().hex[:8]
        self.wandb_run = wandb.init(
            project=settings.get("project") or "uvav", entity=settings.get("entity"), mode=settings.get("mode"),
            dir=str(folder), id=run_id, resume="allow", name=run.name,
            group=Path(run.sweep).name if run.sweep else run.group, job_type=run.group, config=run.config,
            tags=[f"group:{run.group}"], reinit="create_new",
            settings=wandb.Settings(console="off", silent=True, x_disable_stats=True))
        save_run_id(run.job_dir, TRACKER, run_id)
        self._defined: set[str] = set()

    def write_step(self, stage: str, global_step: int, values: dict[str, float]) -> None:
        self._log({f"{stage}/{k}": v for k, v in values.items()}, f"{stage}/step", global_step)

    def write_epoch(self, stage: str, epoch: int, values: dict[str, float]) -> None:
        self._log({f"{stage}/epoch/{k}": v for k, v in values.items()}, f"{stage}/epoch", epoch)

    def finish(self, metrics: dict[str, Any]) -> None:
        """After ``metrics.json`` is written: the test accuracies and objective in the summary, ``metrics.json`` among
        the run's files; the run finished."""
        accuracy = metrics.get("accuracy") or {}
        summary = {f"test/{mode}/{case}": v for mode, cases in accuracy.items() for case, v in cases.items()}
        if "objective" in metrics:
            summary["objective"] = metrics["objective"]["value"]
        summary["uvav.job_key"] = metrics.get("job_key")
        self.wandb_run.summary.update(summary)
        if (self.run.job_dir / "metrics.json").exists():
            self.wandb_run.save(str(self.run.job_dir / "metrics.json"), base_path=str(self.run.job_dir), policy="now")
        self.wandb_run.finish()

    def _log(self, values: dict[str, float], axis: str, point: int) -> None:
        """``values`` at ``point`` of their own x axis ``axis`` (stages and epochs have axes of their own)."""
        for key in values.keys() - self._defined:
            self.wandb_run.define_metric(key, step_metric=axis)
            self._defined.add(key)
        self.wandb_run.log({**values, axis: point})
