"""``logger=mlflow``: a job is an MLflow run (``mlflow`` is imported only here, inside functions).

- Where: ``logger.mlflow.tracking_uri``, else ``$MLFLOW_TRACKING_URI`` (MLflow's own convention), else a SQLite store
  ``<outputs>/mlflow.db`` (:func:`default_store`), never the working directory. Experiment ``logger.mlflow.experiment``.
- What: the resolved config as params (secrets masked), uvav's group key, sweep and job folder as tags; per stage
  ``<stage>/train_loss`` and ``<stage>/lr`` at the global step, ``<stage>/epoch/<metric>`` per epoch; when the job
  ends (:meth:`MlflowLogger.finish`) the job key and git commit as tags, the test accuracies as ``test/<mode>/<case>``,
  ``metrics.json``, the test table ``accuracy.csv`` and ``curves/`` as artifacts.
- A job started again in the same folder continues the same run (its id is kept in ``curves/mlflow_run_id``).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

from uvav.config import flatten
from uvav.loggers.base import CURVES, GlobalStepLogger
from uvav.loggers.tracking import TrackedRun, save_run_id, saved_run_id

TRACKER = "mlflow"
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param's value
BATCH = 100  # params per log_batch call (MLflow's limit)


def default_store(job_dir: Path) -> str:
    """``sqlite:///<outputs>/mlflow.db``: ``<outputs>`` is the job's nearest ancestor folder named ``outputs`` (Hydra's
    ``outputs/runs/...`` and ``outputs/multirun/...``), else the folder that holds the job (a sweep's folder)."""
    job_dir = Path(job_dir).resolve()
    root = next((p for p in job_dir.parents if p.name == "outputs"), job_dir.parent)
    return f"sqlite:///{root / 'mlflow.db'}"


def tracking_uri(settings: Any, job_dir: Path) -> str:
    return settings.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI") or default_store(job_dir)


class MlflowLogger(GlobalStepLogger):
    """Metrics are buffered and sent once per epoch (and at close), one ``log_batch`` call each."""

    def __init__(self, settings: Any, run: TrackedRun, log_steps: bool = True) -> None:
        from mlflow.tracking import MlflowClient

        super().__init__(log_steps)
        self.run = run
        self.client = MlflowClient(tracking_uri(settings, run.job_dir))
        self._pending: list[Any] = []
        self.run_id = saved_run_id(run.job_dir, TRACKER)
        if self.run_id is not None:  # a resumed job: the same run, running again
            self.client.update_run(self.run_id, status="RUNNING")
            return
        name = settings.get("experiment") or "uvav"
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
        self.run_id = self.client.create_run(experiment_id, tags=run.tags(), run_name=run.name).info.run_id
        save_run_id(run.job_dir, TRACKER, self.run_id)
        self._log_params(flatten(run.config))

    def write_step(self, stage: str, global_step: int, values: dict[str, float]) -> None:
        self._add({f"{stage}/{k}": v for k, v in values.items()}, global_step)

    def write_epoch(self, stage: str, epoch: int, values: dict[str, float]) -> None:
        self._add({f"{stage}/epoch/{k}": v for k, v in values.items()}, epoch)
        self._flush()

    def close(self) -> None:
        super().close()
        self._flush()

    def finish(self, metrics: dict[str, Any]) -> None:
        """After ``metrics.json`` is written: the job key, commit, test accuracies and files; the run FINISHED."""
        from mlflow.entities import RunTag

        tags = {"uvav.job_key": metrics.get("job_key"), "mlflow.source.git.commit": git_commit()}
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items() if v])
        accuracy = metrics.get("accuracy") or {}
        self._add({f"test/{mode}/{case}": v for mode, cases in accuracy.items() for case, v in cases.items()}, 0)
        if "objective" in metrics:
            self._add({"objective": metrics["objective"]["value"]}, 0)
        self._flush()
        job_dir = self.run.job_dir
        if (job_dir / "metrics.json").exists():
            self.client.log_artifact(self.run_id, str(job_dir / "metrics.json"))
        if accuracy:
            self.client.log_text(self.run_id, _accuracy_csv(accuracy), "accuracy.csv")
        if (job_dir / CURVES).is_dir():
            self.client.log_artifacts(self.run_id, str(job_dir / CURVES), CURVES)
        self.client.set_terminated(self.run_id, "FINISHED")

    def _add(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._pending += [Metric(key, float(value), now, int(step)) for key, value in values.items()]

    def _flush(self) -> None:
        for start in range(0, len(self._pending), 1000):  # MLflow takes at most 1000 metrics per batch
            self.client.log_batch(self.run_id, metrics=self._pending[start:start + 1000])
        self._pending = []

    def _log_params(self, flat: dict[str, Any]) -> None:
        from mlflow.entities import Param

        params = [Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in flat.items()]
        for start in range(0, len(params), BATCH):
            self.client.log_batch(self.run_id, params=params[start:start + BATCH])


def git_commit() -> str | None:
    """The uvav checkout's git commit (``+dirty`` with uncommitted changes); None for an installed uvav."""
    from uvav.outputs import provenance

    commit = str(provenance().get("uvav", ""))
    return commit if re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", commit) else None


def _accuracy_csv(accuracy: dict[str, dict[str, float]]) -> str:
    modes = list(accuracy)
    cases = list(dict.fromkeys(case for values in accuracy.values() for case in values))
    lines = [",".join(["case", *modes])]
    lines += [",".join([case, *(repr(accuracy[m].get(case, float("nan"))) for m in modes)]) for case in cases]
    return "\n".join(lines) + "\n"
