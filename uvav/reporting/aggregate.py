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
import datetime as dt
import shlex
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from uvav.jobs import Job, read_jobs
from uvav.methods import FT, HEAD_ONLY_LABEL, classifying, result_labels
from uvav.reporting.formats import metric_label, to_latex, to_markdown
from uvav.reporting.grouping import collect, collect_curves
from uvav.reporting.studies import find_studies
from uvav.reporting.tables import accuracy_table, accuracy_values, format_resources, resource_table

MAX_GROUP_PLOTS = 6  # per-group PNGs only up to this many groups (a search has one group per configuration)
MAP_NOTE = ("mAP (multi-label data such as AudioSet): the mean over classes of scikit-learn's average precision, "
            "as CAV-MAE computes it; per-class AP is in each job's metrics.json (per_class_ap). ")
HEAD_ONLY_NOTE = (f"{HEAD_ONLY_LABEL}: that frozen model with only the classifier head retrained on the same "
                  "training cases (no prompts).")
CASES_NOTE = ("Vision only = noisy audio, audio only = noisy visual; mixed: every test sample gets a random case. "
              "Improvements are differences within each job (same seed), then averaged over seeds.")
FASTEST_NOTE = ("'Fastest epoch' is the shortest single training epoch over the group's jobs: less sensitive than the "
                "median to other work on a shared machine.")
CURVES_NOTE = ("Training curves (`curves.csv`, `curves_<stage>.png`): {have} of {jobs} jobs have them. Absent: "
               "jobs that reused a finished job (its curves are in that job's folder), ran before uvav logged curves "
               "or with logger=none (logger=tensorboard: read when tensorboard is installed). An FT stage appears "
               "only for the job that trained its FT model (the others found it in the cache).")
TOTAL_MEMORY_NOTE = ("The paper's 'total memory' column is not reproduced: no job measures it (peak training memory "
                     "counts training tensors only, see the memory methods).")


# ----------------------------------------------------------------------------------------------- main


def aggregate(inputs: list[Path], out: Path, plots: bool = True, notes: list[str] | None = None,
              command: str | None = None) -> dict[str, Any]:
    """Read the jobs under ``inputs`` and write every table, plot and the README (with ``notes``) into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    jobs = read_jobs(inputs)
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
        from uvav.reporting import plots as plotting

        written += plotting.make_all(frame, tidy, studies, out, max_group_plots=MAX_GROUP_PLOTS, curves=curves)
        if len(groups) > MAX_GROUP_PLOTS:
            notes = [*(notes or []), f"No per-group plots: {len(groups)} groups (more than {MAX_GROUP_PLOTS}); "
                     "groups.csv, accuracy_values.csv and curves.csv hold their numbers."]
    _write_readme(out, inputs, jobs, frame, groups, failed, duplicates, studies, written, notes or [],
                  command or shlex.join(["python", "-m", "uvav.aggregate", *map(str, inputs), "--out", str(out)]))
    return {"jobs": len(jobs), "completed": len(frame), "failed": len(failed), "groups": len(groups)}


def accuracy_note() -> str:
    """What the accuracy tables' columns and rows mean: each method's :attr:`~uvav.methods.Method.table_note` (the
    head-only baseline's before the first frozen-base method's), then the cases."""
    notes: list[str] = []
    for method in classifying():
        if method.frozen_base and HEAD_ONLY_NOTE not in notes:
            notes.append(HEAD_ONLY_NOTE)
        notes += [method.table_note] if method.table_note else []
    return " ".join([*notes, CASES_NOTE])


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
    header = (f"# Test {metric_label(groups['metric'])} per case\n\n" + accuracy_note() + "\n\n")
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
    """For FT-only groups: name the groups (of frozen-base methods) whose frozen base is the very same FT model."""
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
        f"of seeds. Searches select on validation {metric} only. " + MAP_NOTE * ("mAP" in metric) + accuracy_note(),
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
