"""Collect finished jobs into the paper's tables: ``python -m uvav.aggregate DIR [DIR ...] --out results/NAME``.

A job folder is any folder under the inputs that holds ``.hydra/`` or ``metrics.json`` (sweep dirs, run dirs or
single job folders). Every job is either read (``metrics.json`` with ``status: completed``) or listed in
``failed_jobs.{csv,md}`` with the reason; nothing is dropped silently. Jobs are grouped by their resolved config
without the seed (and without settings that cannot change a result); each group gets an accuracy and a resource
table. Outputs (all in ``--out``): ``runs.csv`` (tidy: one row per job x mode x case), ``accuracy.{md,csv,tex}``,
``accuracy_values.csv``, ``resources.{md,csv,tex}``, ``groups.csv``, ``failed_jobs.{csv,md}``,
``optuna_trials.csv`` (when a sweep holds an Optuna SQLite db), ``curves.csv`` (when jobs logged training curves:
tidy, one row per job x stage x epoch x metric), PNG plots (``curves_<stage>.png`` among them) and ``README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import shlex
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from uvav.config import GROUPING_NEUTRAL
from uvav.jobs import Job, find_job_dirs, read_job
from uvav.loggers import read_curves
from uvav.methods import FT, result_labels
from uvav.outputs import fingerprint
from uvav.tables import (
    accuracy_table,
    accuracy_values,
    format_resources,
    metric_label,
    resource_table,
    to_latex,
    to_markdown,
)

MAX_GROUP_PLOTS = 6  # per-group PNGs only up to this many groups (a search has one group per configuration)
MAP_NOTE = ("mAP (multi-label data such as AudioSet): the mean over classes of scikit-learn's average precision, "
            "as CAV-MAE computes it; per-class AP is in each job's metrics.json (per_class_ap). ")
ACCURACY_NOTE = (
    "FT: the fine-tuned model (in a PL, LoRA or adapter group: those jobs' own frozen base). Head only: that frozen "
    "model with only the classifier head retrained on the same training cases (no prompts). FT + PL (uncertain): all "
    "prompt sets together, as when the case is unknown; (oracle): each sample with its own case's prompt set. "
    "Vision only = noisy audio, audio only = noisy visual; mixed: every test sample gets a random case. "
    "Improvements are differences within each job (same seed), then averaged over seeds.")
FASTEST_NOTE = ("'Fastest epoch' is the shortest single training epoch over the group's jobs: less sensitive than the "
                "median to other work on a shared machine.")
CURVES_NOTE = ("Training curves (`curves.csv`, `curves_<stage>.png`): {have} of {jobs} jobs have them. Absent: "
               "jobs that reused a finished job (its curves are in that job's folder), ran before uvav logged curves "
               "or with logger=none (logger=tensorboard: read when tensorboard is installed). An FT stage appears "
               "only for the job that trained its FT model (the others found it in the cache).")
TOTAL_MEMORY_NOTE = ("The paper's 'total memory' column is not reproduced: no job measures it (peak training memory "
                     "counts training tensors only, see the memory methods).")


# ----------------------------------------------------------------------------------------------- grouping


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: json.dumps(obj) if isinstance(obj, list) else obj}


def group_settings(metrics: dict[str, Any], choices: dict[str, Any]) -> dict[str, Any]:
    """The flattened settings that define a job's group: its resolved config without
    :data:`uvav.config.GROUPING_NEUTRAL`."""
    config = metrics.get("config")
    if not isinstance(config, dict):  # no resolved config: fall back to choices and overrides
        config = {"choices": choices, "overrides": sorted(o for o in metrics.get("overrides", [])
                                                           if not o.startswith(("seed=", "paths.")))}
    flat = _flatten(config)
    return {k: v for k, v in flat.items() if not any(k == n or k.startswith(f"{n}.") for n in GROUPING_NEUTRAL)}


def _shown_overrides(overrides: list[str]) -> set[str]:
    return {o for o in overrides if not o.startswith(("seed=", "paths.", "hydra.", "trainer.progress="))}


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


# ----------------------------------------------------------------------------------------------- optuna


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


# ----------------------------------------------------------------------------------------------- main


def aggregate(inputs: list[Path], out: Path, plots: bool = True, notes: list[str] | None = None,
              command: str | None = None) -> dict[str, Any]:
    """Read the jobs under ``inputs`` and write every table, plot and the README (with ``notes``) into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    job_dirs = find_job_dirs(inputs)
    jobs = [read_job(p) for p in job_dirs]
    failed = pd.DataFrame([{"job_dir": str(j.path), "reason": j.reason, "overrides": " ".join(j.overrides)}
                           for j in jobs if j.reason], columns=["job_dir", "reason", "overrides"])
    failed.to_csv(out / "failed_jobs.csv", index=False)
    (out / "failed_jobs.md").write_text(
        "# Failed or incomplete jobs\n\n" + (to_markdown(failed) if len(failed) else "None.") + "\n")
    frame, tidy, duplicates = collect(jobs)
    tidy.to_csv(out / "runs.csv", index=False)
    written = ["runs.csv", "failed_jobs.csv", "failed_jobs.md"]
    studies = find_studies(inputs)
    if len(studies):
        studies.to_csv(out / "optuna_trials.csv", index=False)
        written.append("optuna_trials.csv")
    groups = pd.DataFrame()
    if len(frame):
        groups, files = _write_tables(frame, tidy, out)
        written += files
    curves = collect_curves(frame)
    if len(curves):
        curves.to_csv(out / "curves.csv", index=False)
        written.append("curves.csv")
    if len(frame):
        notes = [*(notes or []), CURVES_NOTE.format(have=curves["job_dir"].nunique(), jobs=len(frame))]
    if plots and (len(frame) or len(studies)):
        from uvav import plots as plotting

        written += plotting.make_all(frame, tidy, studies, out, max_group_plots=MAX_GROUP_PLOTS, curves=curves)
        if len(groups) > MAX_GROUP_PLOTS:
            notes = [*(notes or []), f"No per-group plots: {len(groups)} groups (more than {MAX_GROUP_PLOTS}); "
                     "groups.csv, accuracy_values.csv and curves.csv hold their numbers."]
    _write_readme(out, inputs, jobs, frame, groups, failed, duplicates, studies, written, notes or [],
                  command or shlex.join(["python", "-m", "uvav.aggregate", *map(str, inputs), "--out", str(out)]))
    return {"jobs": len(jobs), "completed": len(frame), "failed": len(failed), "groups": len(groups)}


def group_overview(frame: pd.DataFrame, stats: pd.DataFrame) -> pd.DataFrame:
    """One row per group: its settings, seeds, mean validation objective and mean test accuracy on ``mixed``."""
    groups = (frame.groupby(["group", "group_label"], sort=False)
              .agg(method=("method", "first"), seeds=("seed", lambda s: " ".join(map(str, sorted(s)))),
                   n=("seed", "count"), prompt_kind=("prompt_kind", "first"), prompt_length=("prompt_length", "first"),
                   method_lr=("method_lr", "first"), train_cases=("train_cases", "first"),
                   val_objective=("objective", "mean"), metric=("metric", "first"))
              .reset_index())
    labels = result_labels().values()
    mixed = stats[(stats["case"] == "mixed") & stats["column"].isin(labels)]
    mixed = mixed.pivot_table(index="group", columns="column", values="mean", aggfunc="first")
    mixed = mixed[[c for c in labels if c in mixed]].add_prefix("test mixed: ")
    groups = groups.merge(mixed, left_on="group", right_index=True, how="left")
    groups = groups.sort_values(["method", "prompt_kind", "prompt_length", "method_lr", "group_label"],
                                na_position="first")
    return groups.round(4).reset_index(drop=True)


def _write_tables(frame: pd.DataFrame, tidy: pd.DataFrame, out: Path) -> tuple[pd.DataFrame, list[str]]:
    stats = accuracy_values(tidy)
    stats.to_csv(out / "accuracy_values.csv", index=False)
    groups = group_overview(frame, stats)
    groups.to_csv(out / "groups.csv", index=False)
    acc_md, acc_tex, acc_csv, res_md, res_tex, res_csv = [], [], [], [], [], []
    for g in groups.itertuples():
        title = f"Group {g.group}: {g.group_label} (method={g.method}, seeds {g.seeds})"
        table = accuracy_table(stats, g.group)
        note = _same_ft_note(frame, g.group)
        acc_md.append(f"## {title}\n\nTest {g.metric}, mean ± sample std over seeds.{note}\n\n"
                      f"{to_markdown(table, index=True)}\n")
        acc_tex.append(to_latex(table, index=True, caption=title))
        acc_csv.append(table.reset_index().assign(group=g.group, group_label=g.group_label))
        res, marks = resource_table(frame, g.group)
        if res.empty:
            continue
        shown = format_resources(res)
        methods = "\n".join(f"- [{mark}] {text}" for mark, text in marks.items())
        res_md.append(f"## {title}\n\n{to_markdown(shown)}\n\n{methods}\n")
        res_tex.append(to_latex(shown, caption=title) + "".join(f"% [{k}] {v}\n" for k, v in marks.items()))
        full = {col: [_expand(s, marks) for s in res[col]] for col in ("Memory method", "Time method")}
        res_csv.append(res.assign(group=g.group, group_label=g.group_label, **full))
    header = (f"# Test {metric_label(groups['metric'])} per case\n\n" + ACCURACY_NOTE + "\n\n")
    (out / "accuracy.md").write_text(header + "\n".join(acc_md))
    (out / "accuracy.tex").write_text("\n".join(acc_tex))
    pd.concat(acc_csv, ignore_index=True).to_csv(out / "accuracy.csv", index=False)
    files = ["accuracy.md", "accuracy.tex", "accuracy.csv", "accuracy_values.csv", "groups.csv"]
    if res_md:
        (out / "resources.md").write_text("# Training resources per method\n\n" + TOTAL_MEMORY_NOTE + " "
                                          + FASTEST_NOTE + "\n\n"
                                          + "\n".join(res_md))
        (out / "resources.tex").write_text(f"% {TOTAL_MEMORY_NOTE}\n" + "\n".join(res_tex))
        pd.concat(res_csv, ignore_index=True).to_csv(out / "resources.csv", index=False)
        files += ["resources.md", "resources.tex", "resources.csv"]
    return groups, files


def _expand(marks: str, notes: dict[str, str]) -> str:
    return "; ".join(notes.get(m.strip("[] "), m) for m in marks.split(","))


def _same_ft_note(frame: pd.DataFrame, group: str) -> str:
    """For FT-only groups: name the groups (PL, LoRA, adapter) whose frozen base is the very same FT model."""
    part = frame[frame["group"] == group]
    if "ft_model_key" not in frame or part["method"].iloc[0] != FT:
        return ""
    keys = set(part["ft_model_key"].dropna())
    others = frame[(frame["method"] != FT) & frame["ft_model_key"].isin(keys)]["group"].unique()
    return (f" The FT models of this group are the frozen bases of group(s) {', '.join(others)}: same numbers "
            f"as their FT column." if len(others) else "")


def _write_readme(out: Path, inputs: list[Path], jobs: list[Job], frame: pd.DataFrame, groups: pd.DataFrame,
                  failed: pd.DataFrame, duplicates: list[str], studies: pd.DataFrame, written: list[str],
                  notes: list[str], command: str) -> None:
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    metric = metric_label(frame["metric"]) if len(frame) else "accuracy"
    lines = [
        f"# {out.name}: aggregated results", "",
        f"Written {now} by `{command}`.", "",
        f"- inputs: {', '.join(f'`{p}`' for p in inputs)}",
        f"- job folders found: {len(jobs)}; completed and used: {len(frame)}; failed or incomplete: {len(failed)}; "
        f"duplicates counted once: {len(duplicates)}",
        f"- config groups (all settings but the seed): {len(groups)}", "",
        f"Cells are test {metric}; each is the mean ± sample standard deviation (ddof=1) over seeds, n = number "
        f"of seeds. Searches select on validation {metric} only. " + MAP_NOTE * ("mAP" in metric) + ACCURACY_NOTE,
        "",
    ]
    if notes:
        lines += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    if len(groups):
        lines += ["## Groups", "", to_markdown(groups), ""]
    devices = sorted(set(frame["device"].dropna().astype(str) + " (" + frame["device_name"].fillna("?") + ")")) \
        if len(frame) else []
    if devices:
        lines += [f"Devices: {', '.join(devices)}.", ""]
    lines += ["## Failed or incomplete jobs", "", to_markdown(failed) if len(failed) else "None.", ""]
    if duplicates:
        lines += ["## Duplicates", "", *[f"- {d}" for d in duplicates], ""]
    if len(studies):
        lines += ["## Optuna studies", ""]
        for (name, storage), part in studies.groupby(["study", "storage"]):
            states = part["state"].value_counts().to_dict()
            done = part[part["state"] == "COMPLETE"]
            best = done.loc[done["value"].idxmax()] if len(done) else None
            params = {c.removeprefix("params_"): getattr(best[c], "item", lambda v=best[c]: v)()
                      for c in part.columns if c.startswith("params_")} if best is not None else {}
            lines.append(f"- `{name}` in `{storage}`: {len(part)} trials {states}; best validation objective "
                         + (f"{best['value']:.4f} at trial {int(best['number'])} with {params}" if best is not None
                            else "none (no completed trial)"))
        lines.append("")
    lines += ["## Files", "", *[f"- `{f}`" for f in written], ""]
    (out / "README.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m uvav.aggregate", description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="+", type=Path, help="sweep, run or job folders (searched recursively)")
    parser.add_argument("--out", type=Path, required=True, help="output folder, e.g. results/<name>")
    parser.add_argument("--no-plots", action="store_true", help="tables only")
    parser.add_argument("--note", action="append", default=[], help="a line for the README (repeatable)")
    args = parser.parse_args(argv)
    missing = [p for p in args.inputs if not p.exists()]
    if missing:
        parser.error(f"no such folder: {', '.join(map(str, missing))}")
    command = shlex.join(["python", "-m", "uvav.aggregate", *(sys.argv[1:] if argv is None else argv)])
    summary = aggregate(args.inputs, args.out, plots=not args.no_plots, notes=args.note, command=command)
    print(f"uvav.aggregate: {summary['jobs']} job folders, {summary['completed']} used, {summary['failed']} failed "
          f"or incomplete (see {args.out / 'failed_jobs.md'}), {summary['groups']} groups -> {args.out}")
    return 0 if summary["jobs"] else 1


if __name__ == "__main__":
    from uvav.errors import exit_code_of

    sys.exit(exit_code_of(main))
