"""Training curves: what every stage reports per optimiser step and per epoch, and where it goes.

``logger=csv`` (default), ``logger=tensorboard`` or ``logger=none`` (group ``conf/logger``). Only rank 0 of a
distributed job logs. Interface used by :func:`uvav.train.fit` (and :mod:`uvav.pretraining`): ``step`` after every
optimiser step (``train_loss``, ``lr``), ``epoch`` after every epoch (``train_loss``, ``lr``, ``time_s``, ``val_acc``
and ``val_<case>`` per training case; pretraining: its losses, ``lr``, ``time_s``).

Files, under ``<job_dir>/curves/``:

- ``steps.csv`` (wide): ``stage,epoch,step,train_loss,lr``, one row per optimiser step (``step`` 0-based within
  the epoch); ``epochs.csv`` (tidy): ``stage,epoch,metric,value``, one row per metric per epoch. Rows are appended
  and flushed as they come, so a killed job loses nothing it logged.
- ``tensorboard/<stage>/``: event files, one TensorBoard run per stage: tags ``<stage>/train_loss`` and
  ``<stage>/lr`` per global step (``epoch * steps per epoch + step``), ``<stage>/epoch/<metric>`` per epoch.

A job relaunched into the same folder resumes from its last finished epoch and logs the epoch that was in
progress again: readers keep the **last** row per (stage, epoch, step) and per (stage, epoch, metric), as
:func:`read_curves` does. TensorBoard hides the re-run steps itself (``purge_step``); an epoch's values logged just
before a kill that came ahead of the epoch's checkpoint show twice at that epoch there.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pandas as pd

CURVES = "curves"
STEP_METRICS = ("train_loss", "lr")
STEP_COLUMNS = ("stage", "epoch", "step", *STEP_METRICS)
EPOCH_COLUMNS = ("stage", "epoch", "metric", "value")
LOGGERS = ("csv", "tensorboard", "none")
TENSORBOARD_HINT = "logger=tensorboard needs the tensorboard package: pip install 'uvav[tensorboard]'"


class TrainingLogger:
    """Receives a job's curves; this base class drops them (``logger=none``, and every rank but 0)."""

    def step(self, stage: str, epoch: int, step: int, values: dict[str, float]) -> None:
        """After optimiser step ``step`` (0-based, within ``epoch``) of ``stage``."""

    def epoch(self, stage: str, epoch: int, values: dict[str, float]) -> None:
        """After ``epoch`` of ``stage`` (validation included)."""

    def close(self) -> None:
        """Flush and release files."""


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


class TensorBoardLogger(TrainingLogger):
    """Event files (``torch.utils.tensorboard.SummaryWriter``), one TensorBoard run per stage: ``<folder>/<stage>/``.

    The steps of a stage's first epoch in this process wait until that epoch ends: then its steps per epoch are known,
    and every step's global step is ``epoch * steps per epoch + step``, also after a resume. A stage's writer opens at
    its first point with ``purge_step`` = that point's step, so TensorBoard hides what a killed run had logged from
    there on (the re-run steps)."""

    def __init__(self, folder: Path, log_steps: bool = True) -> None:
        self.folder, self.log_steps = folder, log_steps
        self._writers: dict[str, Any] = {}
        self._steps_per_epoch: dict[str, int] = {}
        self._waiting: dict[str, list[tuple[int, int, dict[str, float]]]] = {}

    def step(self, stage: str, epoch: int, step: int, values: dict[str, float]) -> None:
        if not self.log_steps:
            return
        if stage in self._steps_per_epoch:
            self._write_step(stage, epoch, step, values)
        else:
            self._waiting.setdefault(stage, []).append((epoch, step, values))

    def epoch(self, stage: str, epoch: int, values: dict[str, float]) -> None:
        self._release(stage)
        writer = self._writer(stage, epoch)
        for metric, value in values.items():
            writer.add_scalar(f"{stage}/epoch/{metric}", value, epoch)
        writer.flush()

    def close(self) -> None:
        for stage in list(self._waiting):  # a stage stopped inside its first epoch here: the steps it made
            self._release(stage)
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

    def _writer(self, stage: str, first_step: int) -> Any:
        if stage not in self._writers:
            from torch.utils.tensorboard import SummaryWriter

            self._writers[stage] = SummaryWriter(log_dir=str(self.folder / stage), purge_step=first_step)
        return self._writers[stage]

    def _release(self, stage: str) -> None:
        waiting = self._waiting.pop(stage, [])
        if waiting and stage not in self._steps_per_epoch:
            self._steps_per_epoch[stage] = max(step for _, step, _ in waiting) + 1
        for epoch, step, values in waiting:
            self._write_step(stage, epoch, step, values)

    def _write_step(self, stage: str, epoch: int, step: int, values: dict[str, float]) -> None:
        global_step = epoch * self._steps_per_epoch[stage] + step
        writer = self._writer(stage, global_step)
        for metric, value in values.items():
            writer.add_scalar(f"{stage}/{metric}", value, global_step)


def _number(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def tensorboard_problem() -> str | None:
    """Why ``logger=tensorboard`` cannot run here (``None`` when it can)."""
    try:
        import torch.utils.tensorboard  # noqa: F401  (imports the tensorboard package and checks its version)
    except ImportError as error:
        return f"{TENSORBOARD_HINT} ({error})"
    return None


def open_logger(cfg: Any, job_dir: Path, enabled: bool = True) -> TrainingLogger:
    """The logger ``cfg.logger`` names, writing into ``<job_dir>/curves``; a dropping one when not ``enabled``."""
    settings = cfg.get("logger") or {"name": "none"}
    name = settings["name"]
    if not enabled or name == "none":
        return TrainingLogger()
    folder = Path(job_dir) / CURVES
    log_steps = bool(settings.get("log_steps", True))
    if name == "csv":
        return CsvLogger(folder, log_steps)
    if name == "tensorboard":
        problem = tensorboard_problem()
        if problem:
            raise ImportError(problem)
        return TensorBoardLogger(folder / "tensorboard", log_steps)
    raise ValueError(f"logger.name={name!r}: one of {list(LOGGERS)}")


# ----------------------------------------------------------------------------------------------- reading


def read_curves(job_dir: Path, steps: bool = False) -> pd.DataFrame:
    """A job's curves, tidy and deduplicated (the last row per key wins: see the module's docstring).

    ``steps=False``: ``stage, epoch, metric, value`` from ``epochs.csv``, or else from the TensorBoard event files
    (when tensorboard is installed). ``steps=True``: ``stage, epoch, step, metric, value`` from ``steps.csv``.
    Empty (with those columns) when the job has no curves."""
    folder = Path(job_dir) / CURVES
    if steps:
        wide = _read_csv(folder / "steps.csv", STEP_COLUMNS)
        keys = ["stage", "epoch", "step"]
        wide = wide.drop_duplicates(keys, keep="last")
        tidy = wide.melt(id_vars=keys, value_vars=list(STEP_METRICS), var_name="metric").dropna(subset=["value"])
        return _in_order(tidy, ["stage", "epoch", "step", "metric", "value"], ["epoch", "step"])
    frame = _read_csv(folder / "epochs.csv", EPOCH_COLUMNS)
    if frame.empty and (folder / "tensorboard").is_dir():
        frame = _read_tensorboard_epochs(folder / "tensorboard")
    frame = frame.drop_duplicates(["stage", "epoch", "metric"], keep="last")
    return _in_order(frame, list(EPOCH_COLUMNS), ["epoch"])


def _read_csv(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """Complete lines only (a last line without its newline was cut short); rows without their keys dropped."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return pd.DataFrame(columns=list(columns))
    text = text[: text.rfind("\n") + 1]
    if not text.strip():
        return pd.DataFrame(columns=list(columns))
    frame = pd.read_csv(io.StringIO(text), on_bad_lines="skip", dtype={"stage": str, "metric": str})
    keys = [c for c in columns if c in ("stage", "epoch", "step", "metric")]
    frame = frame.dropna(subset=keys)
    for key in ("epoch", "step"):
        if key in frame:
            frame[key] = frame[key].astype(int)
    return frame[list(columns)]


def _read_tensorboard_epochs(folder: Path) -> pd.DataFrame:
    """``<stage>/epoch/<metric>`` scalars of the runs (sub-folders) in ``folder``, the runs in the order they started
    (empty without tensorboard)."""
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        return pd.DataFrame(columns=list(EPOCH_COLUMNS))
    runs = []
    for run in sorted(p for p in folder.iterdir() if p.is_dir()):
        events = EventAccumulator(str(run), size_guidance={"scalars": 0})
        events.Reload()
        rows = []
        for tag in events.Tags()["scalars"]:
            stage, kind, metric = (tag.split("/") + ["", ""])[:3]
            if kind == "epoch" and metric:
                rows += [(event.wall_time, stage, event.step, metric, event.value) for event in events.Scalars(tag)]
        if rows:
            runs.append(sorted(rows))
    rows = [row[1:] for run in sorted(runs) for row in run]  # wall-time order: a re-logged epoch comes last
    return pd.DataFrame(rows, columns=list(EPOCH_COLUMNS))


def _in_order(frame: pd.DataFrame, columns: list[str], by: list[str]) -> pd.DataFrame:
    """Stages in the order they first appear, each sorted by ``by`` (stable: metrics keep their order)."""
    rank = {stage: i for i, stage in enumerate(dict.fromkeys(frame["stage"]))}
    frame = frame.assign(_rank=frame["stage"].map(rank)).sort_values(["_rank", *by], kind="stable")
    return frame[columns].reset_index(drop=True)
