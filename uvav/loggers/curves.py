"""Reading a job's training curves back (:func:`read_curves`): tidy, the last row per key winning."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

from uvav.loggers.base import CURVES, STEP_METRICS
from uvav.loggers.files import EPOCH_COLUMNS, STEP_COLUMNS

if TYPE_CHECKING:
    import pandas as pd


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
    import pandas as pd

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
    import pandas as pd

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
