"""Optuna studies found beside the jobs: the trials of every study in SQLite files under the inputs."""

from __future__ import annotations

import contextlib
import sqlite3
import sys
from pathlib import Path

import pandas as pd


def _is_optuna_db(path: Path) -> bool:
    """Whether ``path`` is an SQLite file with Optuna's tables (checked read-only: Optuna would add its tables)."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.Error:
        return False
    return {"studies", "trials"} <= tables


def find_studies(roots: list[Path]) -> pd.DataFrame:
    """Trials of every Optuna study in SQLite files (``*.db``) under ``roots``; empty when there are none."""
    dbs = sorted({db for root in roots for db in root.rglob("*.db") if _is_optuna_db(db)})
    if not dbs:
        return pd.DataFrame()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    frames = []
    for db in dbs:
        storage = f"sqlite:///{db}"
        try:
            summaries = optuna.get_all_study_summaries(storage=storage)
        except Exception as error:  # e.g. written by another Optuna version; report and go on
            print(f"uvav.aggregate: cannot read the Optuna db {db}: {error}", file=sys.stderr)
            continue
        for summary in summaries:
            study = optuna.load_study(study_name=summary.study_name, storage=storage)
            trials = study.trials_dataframe(attrs=("number", "value", "state", "params", "datetime_start",
                                                   "datetime_complete"))
            trials.insert(0, "study", summary.study_name)
            trials.insert(1, "storage", storage)
            frames.append(trials)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
