"""Jobs into groups and tidy frames: a group is the jobs whose resolved configs differ only in
:data:`uvav.config.GROUPING_NEUTRAL` settings (the seed among them); its label, the overrides that tell it apart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from uvav.config import grouping_neutral, grouping_settings
from uvav.jobs import Job
from uvav.loggers import read_curves
from uvav.outputs import fingerprint


def _override_key(override: str) -> str:
    """``trainer.num_threads`` of ``trainer.num_threads=2`` (``+``/``++``/``~`` prefixes dropped)."""
    return override.split("=", 1)[0].lstrip("+~")


def group_settings(metrics: dict[str, Any], choices: dict[str, Any]) -> dict[str, Any]:
    """The flattened settings that define a job's group: its resolved config without
    :data:`uvav.config.GROUPING_NEUTRAL`."""
    config = metrics.get("config")
    if not isinstance(config, dict):  # no resolved config: fall back to choices and overrides
        config = {"choices": choices, "overrides": sorted(o for o in metrics.get("overrides", [])
                                                           if not grouping_neutral(_override_key(o)))}
    return grouping_settings(config)


def _shown_overrides(overrides: list[str]) -> set[str]:
    """The overrides that can name a group: not the grouping-neutral ones (same rule as :func:`group_settings`)."""
    return {o for o in overrides if not grouping_neutral(_override_key(o))}


def group_labels(groups: dict[str, tuple[dict[str, Any], list[str], dict[str, Any]]]) -> dict[str, str]:
    """Short names for groups (``group -> (settings, overrides, choices)``): the overrides that differ between
    groups, plus the differing settings when overrides do not tell them apart; the choices for a single group."""
    if len(groups) == 1:
        ((_, _, choices),) = groups.values()
        return {g: ", ".join(f"{k}={v}" for k, v in sorted(choices.items()) if v is not None) for g in groups}
    shown = {g: _shown_overrides(o) for g, (_, o, _) in groups.items()}
    common = set.intersection(*shown.values())
    labels = {g: " ".join(sorted(o - common)) for g, o in shown.items()}
    if len(set(labels.values())) < len(labels):
        keys = sorted({k for s, _, _ in groups.values() for k in s})
        varying = [k for k in keys if len({json.dumps(s.get(k)) for s, _, _ in groups.values()}) > 1]
        labels = {g: " | ".join(filter(None, [labels[g], ", ".join(f"{k}={groups[g][0].get(k)}" for k in varying)]))
                  for g in groups}
    return labels


# ----------------------------------------------------------------------------------------------- tidy frame


def job_record(job: Job) -> dict[str, Any]:
    """One row per job: identity, settings and stage resources (flat columns)."""
    m = job.metrics or {}
    config = m.get("config") or {}
    choices = job.choices or m.get("choices") or {}
    env = m.get("environment") or {}
    method_cfg = config.get("method") or {}
    record: dict[str, Any] = {
        "job_dir": str(job.path), "job_key": m.get("job_key"), "method": m.get("method"), "seed": m.get("seed"),
        "metric": m.get("metric", "accuracy"),
        "reused_from": m.get("reused_from"), "objective_name": (m.get("objective") or {}).get("name"),
        "objective": (m.get("objective") or {}).get("value"),
        "train_cases": "+".join(m.get("train_cases") or []),
        "prompt_kind": (config.get("prompt") or {}).get("kind"),
        "prompt_length": (config.get("prompt") or {}).get("length"),
        "method_lr": method_cfg.get("lr"), "method_epochs": method_cfg.get("epochs"),
        "base_scenario": method_cfg.get("base_scenario"),
        "device": m.get("device"), "device_name": env.get("device_name"), "wall_time_s": m.get("wall_time_s"),
        "overrides": " ".join(job.overrides or m.get("overrides") or []),
    }
    record.update({f"choice_{k}": v for k, v in choices.items()})
    for stage, info in (m.get("stages") or {}).items():
        resources, params = info.get("resources") or {}, info.get("params") or {}
        record.update({
            f"{stage}_time_per_epoch_s": resources.get("time_per_epoch_s"),
            f"{stage}_fastest_epoch_s": min(resources.get("epoch_times_s") or [float("nan")]),
            f"{stage}_peak_train_memory_bytes": resources.get("peak_train_memory_bytes"),
            f"{stage}_device": resources.get("device"),
            f"{stage}_memory_method": resources.get("memory_method"),
            f"{stage}_time_method": resources.get("time_method"),
            f"{stage}_trainable_params": params.get("trainable"), f"{stage}_total_params": params.get("total"),
            f"{stage}_best_val": info.get("best_val"), f"{stage}_model_key": info.get("key"),
        })
    return record


def collect(jobs: list[Job]) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(jobs frame: one row per usable job with ``group``/``group_label``, tidy frame, notes on duplicates)."""
    usable = [j for j in jobs if j.metrics is not None]
    if not usable:
        return pd.DataFrame(), pd.DataFrame(), []
    settings = [group_settings(j.metrics, j.choices) for j in usable]
    keys = [fingerprint(s)[:8] for s in settings]
    by_group = {}
    for job, key, s in zip(usable, keys, settings, strict=True):
        by_group.setdefault(key, (s, job.overrides or job.metrics.get("overrides") or [],
                                  job.choices or job.metrics.get("choices") or {}))
    labels = group_labels(by_group)
    records = [{**job_record(job), "group": key, "group_label": labels[key]}
               for job, key in zip(usable, keys, strict=True)]
    frame = pd.DataFrame(records)
    frame["_reused"] = frame["reused_from"].notna()
    frame = frame.sort_values(["group", "seed", "_reused", "job_dir"]).reset_index(drop=True)
    duplicated = frame.duplicated(["group", "seed"], keep="first")
    notes = [f"{row.job_dir}: same config and seed as an earlier job (counted once)"
             for row in frame[duplicated].itertuples()]
    frame = frame[~duplicated].drop(columns="_reused").reset_index(drop=True)
    metrics_by_dir = {str(j.path): j.metrics for j in usable}
    rows = []
    for rec in frame.to_dict("records"):
        m = metrics_by_dir[rec["job_dir"]]
        for mode, per_case in m["accuracy"].items():
            for case, acc in per_case.items():
                val = ((m.get("val") or {}).get(mode) or {}).get(case)
                rows.append({**rec, "mode": mode, "case": case, "accuracy": acc, "val_accuracy": val})
    first = ["group", "group_label", "method", "seed", "mode", "case", "accuracy", "val_accuracy"]
    tidy = pd.DataFrame(rows)
    tidy = tidy[first + [c for c in tidy.columns if c not in first]]
    return frame, tidy, notes


def collect_curves(frame: pd.DataFrame) -> pd.DataFrame:
    """The training curves of the jobs in ``frame`` (:func:`uvav.loggers.read_curves`), tidy: ``group, group_label,
    seed, job_dir, method, stage, epoch, metric, value``; jobs without curves are absent."""
    parts = []
    for rec in frame.itertuples() if len(frame) else []:
        curves = read_curves(Path(rec.job_dir))
        if len(curves):
            parts.append(curves.assign(group=rec.group, group_label=rec.group_label, seed=rec.seed,
                                       job_dir=rec.job_dir, method=rec.method))
    columns = ["group", "group_label", "seed", "job_dir", "method", "stage", "epoch", "metric", "value"]
    return pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns)
