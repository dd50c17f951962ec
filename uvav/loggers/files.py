"""The file loggers: ``logger=csv`` (``steps.csv``, ``epochs.csv``) and ``logger=tensorboard`` (event files)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from uvav.loggers.base import STEP_METRICS, GlobalStepLogger, TrainingLogger

STEP_COLUMNS = ("stage", "epoch", "step", *STEP_METRICS)
EPOCH_COLUMNS = ("stage", "epoch", "metric", "value")


class _AppendedCsv:
    """A CSV file that rows are appended to and flushed one call at a time; the header is written once. A last line
    cut short (a machine that went down mid-write) is removed on opening, so an appended row never joins it."""

    def __init__(self, path: Path, columns: tuple[str, ...]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            _cut_partial_line(path)
        new = not path.exists() or path.stat().st_size == 0
        self.file = path.open("a", newline="", encoding="utf-8")
        self.writer = csv.writer(self.file, lineterminator="\n")
        if new:
            self.write([columns])

    def write(self, rows: list[tuple[Any, ...]]) -> None:
        self.writer.writerows(rows)
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def _cut_partial_line(path: Path, window: int = 1 << 16) -> None:
    """Truncate ``path`` after its last newline (rows are far shorter than ``window`` bytes)."""
    with path.open("r+b") as file:
        size = file.seek(0, io.SEEK_END)
        start = max(0, size - window)
        file.seek(start)
        tail = file.read()
        if tail and not tail.endswith(b"\n"):
            file.truncate(start + tail.rfind(b"\n") + 1)


class CsvLogger(TrainingLogger):
    """``<folder>/steps.csv`` and ``<folder>/epochs.csv``, created at the first row (a job that trains nothing
    leaves no files). ``log_steps=False``: epochs only."""

    def __init__(self, folder: Path, log_steps: bool = True) -> None:
        self.folder, self.log_steps = folder, log_steps
        self._steps: _AppendedCsv | None = None
        self._epochs: _AppendedCsv | None = None

    def step(self, stage: str, epoch: int, step: int, values: dict[str, float]) -> None:
        if not self.log_steps:
            return
        unknown = set(values) - set(STEP_METRICS)
        if unknown:
            raise ValueError(f"steps.csv has the columns {STEP_COLUMNS}; not {sorted(unknown)}")
        self._steps = self._steps or _AppendedCsv(self.folder / "steps.csv", STEP_COLUMNS)
        self._steps.write([(stage, epoch, step, *(_number(values.get(k)) for k in STEP_METRICS))])

    def epoch(self, stage: str, epoch: int, values: dict[str, float]) -> None:
        self._epochs = self._epochs or _AppendedCsv(self.folder / "epochs.csv", EPOCH_COLUMNS)
        self._epochs.write([(stage, epoch, metric, _number(value)) for metric, value in values.items()])

    def close(self) -> None:
        for file in (self._steps, self._epochs):
            if file is not None:
                file.close()
        self._steps = self._epochs = None


class TensorBoardLogger(GlobalStepLogger):
    """Event files (``torch.utils.tensorboard.SummaryWriter``), one TensorBoard run per stage: ``<folder>/<stage>/``.

    Steps sit at their global step (:class:`~uvav.loggers.base.GlobalStepLogger`). A stage's writer opens at its
    first point with ``purge_step`` = that point's step, so TensorBoard hides what a killed run had logged from
    there on (the re-run steps)."""

    def __init__(self, folder: Path, log_steps: bool = True) -> None:
        super().__init__(log_steps)
        self.folder = folder
        self._writers: dict[str, Any] = {}

    def write_step(self, stage: str, global_step: int, values: dict[str, float]) -> None:
        writer = self._writer(stage, global_step)
        for metric, value in values.items():
            writer.add_scalar(f"{stage}/{metric}", value, global_step)

    def write_epoch(self, stage: str, epoch: int, values: dict[str, float]) -> None:
        writer = self._writer(stage, epoch)
        for metric, value in values.items():
            writer.add_scalar(f"{stage}/epoch/{metric}", value, epoch)
        writer.flush()

    def close(self) -> None:
        super().close()
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

    def _writer(self, stage: str, first_step: int) -> Any:
        if stage not in self._writers:
            from torch.utils.tensorboard import SummaryWriter

            self._writers[stage] = SummaryWriter(log_dir=str(self.folder / stage), purge_step=first_step)
        return self._writers[stage]


def _number(value: float | None) -> str:
    return "" if value is None else repr(float(value))
