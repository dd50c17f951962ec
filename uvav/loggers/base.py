"""What every logger receives (:class:`TrainingLogger`), the fan-out to several, and the global step of a point."""

from __future__ import annotations

CURVES = "curves"  # <job_dir>/curves/: the files of every logger
STEP_METRICS = ("train_loss", "lr")


class TrainingLogger:
    """Receives a job's curves; this base class drops them (``logger=none``, and every rank but 0)."""

    def step(self, stage: str, epoch: int, step: int, values: dict[str, float]) -> None:
        """After optimiser step ``step`` (0-based, within ``epoch``) of ``stage``."""

    def epoch(self, stage: str, epoch: int, values: dict[str, float]) -> None:
        """After ``epoch`` of ``stage`` (validation included)."""

    def close(self) -> None:
        """Flush and release files."""


class Loggers(TrainingLogger):
    """Several loggers at once (``logger.name=[csv,mlflow]``): each call goes to each, in order."""

    def __init__(self, loggers: list[TrainingLogger]) -> None:
        self.loggers = loggers

    def step(self, stage: str, epoch: int, step: int, values: dict[str, float]) -> None:
        for logger in self.loggers:
            logger.step(stage, epoch, step, values)

    def epoch(self, stage: str, epoch: int, values: dict[str, float]) -> None:
        for logger in self.loggers:
            logger.epoch(stage, epoch, values)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()


class GlobalStepLogger(TrainingLogger):
    """A logger whose step points sit on one axis per stage: ``epoch * steps per epoch + step``, also after a resume.

    The steps of a stage's first epoch in this process wait until that epoch ends: then its steps per epoch are
    known. Subclasses write with :meth:`write_step` and :meth:`write_epoch`."""

    def __init__(self, log_steps: bool = True) -> None:
        self.log_steps = log_steps
        self._steps_per_epoch: dict[str, int] = {}
        self._waiting: dict[str, list[tuple[int, int, dict[str, float]]]] = {}

    def step(self, stage: str, epoch: int, step: int, values: dict[str, float]) -> None:
        if not self.log_steps:
            return
        if stage in self._steps_per_epoch:
            self.write_step(stage, epoch * self._steps_per_epoch[stage] + step, values)
        else:
            self._waiting.setdefault(stage, []).append((epoch, step, values))

    def epoch(self, stage: str, epoch: int, values: dict[str, float]) -> None:
        self._release(stage)
        self.write_epoch(stage, epoch, values)

    def close(self) -> None:
        for stage in list(self._waiting):  # a stage stopped inside its first epoch here: the steps it made
            self._release(stage)

    def write_step(self, stage: str, global_step: int, values: dict[str, float]) -> None:
        raise NotImplementedError

    def write_epoch(self, stage: str, epoch: int, values: dict[str, float]) -> None:
        raise NotImplementedError

    def _release(self, stage: str) -> None:
        waiting = self._waiting.pop(stage, [])
        if waiting and stage not in self._steps_per_epoch:
            self._steps_per_epoch[stage] = max(step for _, step, _ in waiting) + 1
        for epoch, step, values in waiting:
            self.write_step(stage, epoch * self._steps_per_epoch[stage] + step, values)

