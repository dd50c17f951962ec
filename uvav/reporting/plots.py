"""PNG plots of aggregated results (matplotlib, Agg): accuracy (mAP for multi-label data) per case, accuracy vs
prompt length, resources, training curves."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from uvav.cases import CASE_LABELS  # noqa: E402
from uvav.methods import FT, METHODS, result_labels, stage_labels  # noqa: E402
from uvav.reporting.formats import metric_label  # noqa: E402
from uvav.reporting.tables import accuracy_values, resource_table  # noqa: E402


def plot_accuracy(stats: pd.DataFrame, group: str, label: str, path: Path, metric: str = "accuracy") -> None:
    """Grouped bars: test accuracy (or ``metric``: mAP) per case, one bar per method, error bars = std over seeds."""
    labels = result_labels().values()
    part = stats[(stats["group"] == group) & stats["column"].isin(labels)]
    cases = [c for c in CASE_LABELS if c in set(part["case"])]
    columns = [c for c in labels if c in set(part["column"])]
    width = 0.8 / max(len(columns), 1)
    fig, ax = plt.subplots(figsize=(1.6 * len(cases) + 2, 3.6))
    x = np.arange(len(cases))
    for i, column in enumerate(columns):
        rows = part[part["column"] == column].set_index("case").reindex(cases)
        ax.bar(x + (i - (len(columns) - 1) / 2) * width, rows["mean"], width, yerr=rows["std"].fillna(0),
               capsize=3, label=column)
    ax.set_xticks(x, [CASE_LABELS[c] for c in cases], rotation=15, ha="right", fontsize=8)
    ax.set_ylabel(f"test {metric}")
    ax.set_ylim(0, 1)
    n = int(part["n"].max()) if len(part) else 0
    ax.set_title(f"{label}\n(mean ± std over {n} seed(s))", fontsize=8)
    ax.legend(fontsize=7, ncol=2)
    _save(fig, path)


def plot_prompt_length(tidy: pd.DataFrame, studies: pd.DataFrame, path: Path, case: str = "mixed",
                       metric: str = "accuracy") -> bool:
    """Left: test accuracy of the jobs of methods with prompts vs prompt length; right: each Optuna trial's
    objective. False if no data."""
    prompted = [m for m in METHODS if m.uses_prompts]
    keys = [key for m in prompted for key in m.result_keys]
    pl = tidy[tidy["method"].isin([m.name for m in prompted]) & (tidy["case"] == case)] if len(tidy) else tidy
    length_col = "params_prompt.length"
    has_study = len(studies) and length_col in studies
    if (not len(pl) or pl["prompt_length"].nunique() < 2) and not has_study:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    ax = axes[0]
    lrs = sorted(pl["method_lr"].dropna().unique()) if len(pl) else []
    for i, lr in enumerate(lrs):  # one line per PL learning rate: pooling over them would hide the effect
        for j, mode in enumerate(keys):
            style = ["-", ":", "--", "-."][j % 4]
            rows = pl[(pl["mode"] == mode) & (pl["method_lr"] == lr)]
            stats = rows.groupby("prompt_length")["accuracy"].agg(["mean", "std"]).sort_index()
            if len(stats):
                ax.errorbar(stats.index, stats["mean"], yerr=stats["std"].fillna(0), marker="o", capsize=3,
                            color=f"C{i}", linestyle=style, label=f"{result_labels()[mode]}, lr={lr:g}")
    ft = pl[pl["mode"] == FT]["accuracy"] if len(pl) else pd.Series(dtype=float)
    if len(ft):
        ax.axhline(ft.mean(), color="k", linestyle="--", label=f"FT (mean of {len(ft)} jobs)")
    _length_axis(ax, pl["prompt_length"] if len(pl) else [])
    ax.set_ylabel(f"test {metric} ({case})")
    ax.set_title("jobs in the inputs (mean ± std over seeds)", fontsize=8)
    if ax.has_data():
        ax.legend(fontsize=6)
    ax = axes[1]
    if has_study:
        done = studies[studies["state"] == "COMPLETE"]
        lr_col = "params_method.lr"
        for name, part in done.groupby("study"):
            by_lr = part.groupby(lr_col) if lr_col in part else [(None, part)]
            for i, (lr, rows) in enumerate(by_lr):
                label = f"{name}, lr={lr:g}" if lr is not None else name
                ax.scatter(rows[length_col], rows["value"], color=f"C{i}", alpha=0.7, label=f"{label} ({len(rows)})")
            best = part.loc[part["value"].idxmax()]
            ax.scatter([best[length_col]], [best["value"]], marker="*", s=220, facecolors="none",
                       edgecolors="k", zorder=3)
        _length_axis(ax, done[length_col])
        ax.legend(fontsize=7)
    else:
        ax.set_xlabel("prompt length")
    ax.set_ylabel(f"objective (validation {metric})")
    ax.set_title("Optuna trials (completed, repeats included; * best)" if has_study else "no Optuna study found",
                 fontsize=8)
    _save(fig, path)
    return True


def plot_resources(frame: pd.DataFrame, group: str, label: str, path: Path) -> bool:
    """Bars per method: peak training memory (MiB) and time per epoch (s, error bar = std over seeds)."""
    table, _ = resource_table(frame, group)
    if table.empty:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    order = list(stage_labels().values())
    colors = [f"C{order.index(m)}" for m in table["Method"]]
    axes[0].bar(table["Method"], table["Training memory (bytes)"] / 2**20, color=colors)
    axes[0].set_ylabel("peak training memory (MiB)")
    axes[1].bar(table["Method"], table["Time per epoch (s)"], yerr=table["Time per epoch std (s)"].fillna(0),
                capsize=3, color=colors)
    axes[1].set_ylabel("time per epoch (s)")
    fig.suptitle(f"{label} - device: {', '.join(sorted(set(table['Device'])))}", fontsize=8)
    _save(fig, path)
    return True


CURVE_METRICS = ("train_loss", "val_acc")  # the panels of a stage's curves, when the stage has them


def plot_curves(curves: pd.DataFrame, stage: str, path: Path, metric: str = "accuracy") -> bool:
    """Train loss and validation accuracy against epoch for one stage: a line per group (mean over its seeds) and a
    band from the lowest to the highest seed. ``curves``: aggregate's ``curves.csv``. False if no data."""
    part = curves[curves["stage"] == stage]
    metrics = [m for m in CURVE_METRICS if m in set(part["metric"])]
    if not metrics:
        return False
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics) + 1, 3.6), squeeze=False)
    groups = part[["group", "group_label"]].drop_duplicates()
    score = metric  # the validation score's name (accuracy or mAP); ``metric`` below names a panel
    for ax, metric in zip(axes[0], metrics, strict=True):
        for i, (group, label) in enumerate(groups.itertuples(index=False)):
            rows = part[(part["group"] == group) & (part["metric"] == metric)]
            per_seed = rows.pivot_table(index="epoch", columns="job_dir", values="value", aggfunc="last")
            if per_seed.empty:
                continue
            epochs = per_seed.index.to_numpy()
            ax.plot(epochs, per_seed.mean(axis=1), color=f"C{i % 10}", marker="o", markersize=3,
                    label=f"{textwrap.shorten(str(label), 60)} (n={per_seed.shape[1]})")
            if per_seed.shape[1] > 1:
                ax.fill_between(epochs, per_seed.min(axis=1), per_seed.max(axis=1), color=f"C{i % 10}", alpha=0.2)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(f"validation {score} (mean over training cases)" if metric == "val_acc"
                      else metric.replace("_", " ") + " (mean over the epoch)", fontsize=8)
        ax.legend(fontsize=6)
    title = f"{stage_labels().get(stage, stage)} ({stage}): mean over seeds, band = lowest to highest seed"
    if stage == FT:
        title += ("\nan FT model is trained once and shared by the jobs that need it: its curve is under the group of "
                  "the job that trained it")
    fig.suptitle(title, fontsize=8)
    _save(fig, path)
    return True


def make_all(frame: pd.DataFrame, tidy: pd.DataFrame, studies: pd.DataFrame, out: Path,
             max_group_plots: int = 6, curves: pd.DataFrame | None = None) -> list[str]:
    """Every plot for the aggregated jobs; returns the file names written into ``out``. Per-group plots and training
    curves (``curves_<stage>.png``, from ``curves``) only when there are at most ``max_group_plots`` groups (a search
    has one group per trial configuration)."""
    written = []
    metric = metric_label(frame["metric"]) if "metric" in frame else "accuracy"
    if curves is not None and len(curves) and frame["group"].nunique() <= max_group_plots:
        known = list(stage_labels())
        for stage in sorted(set(curves["stage"]), key=lambda s: (known.index(s) if s in known else len(known), s)):
            name = f"curves_{stage}.png"
            if plot_curves(curves, stage, out / name, metric):
                written.append(name)
    if len(tidy) and frame["group"].nunique() <= max_group_plots:
        stats = accuracy_values(tidy)
        for group, label in frame[["group", "group_label"]].drop_duplicates().itertuples(index=False):
            name = f"accuracy_{group}.png"
            plot_accuracy(stats, group, label, out / name, metric)
            written.append(name)
            name = f"resources_{group}.png"
            if plot_resources(frame, group, label, out / name):
                written.append(name)
    if plot_prompt_length(tidy, studies, out / "accuracy_vs_prompt_length.png", metric=metric):
        written.append("accuracy_vs_prompt_length.png")
    return written


def _length_axis(ax: plt.Axes, lengths) -> None:
    ticks = sorted({int(v) for v in pd.Series(lengths).dropna()})
    ax.set_xscale("log", base=2)
    if ticks:
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
    ax.set_xlabel("prompt length")


def _save(fig: plt.Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
