"""A robustness study's tables from many runs' ``robustness.json`` (:mod:`uvav.reporting.robustness`).

- ``study.csv``/``study.md``: per method (its result key and variant, e.g. ``ft+dropout``) and training missing rate,
  mean ± std over seeds of clean accuracy, the mean corruption accuracy per modality (mCA: over that modality's
  corruptions and severities 1-5), the relative robustness (mCA / clean) and the mean accuracy over the test missing
  rates of each modality (the area under its missing-rate curve);
- ``paired.csv``/``paired.md``: each of those columns minus the same column of a reference method (head only, FT)
  on the same seed, as mean ± SE (std of the paired differences / sqrt(n)). The reference at the same training rate
  where it has one, else at its default (``None``), else at its only rate (FT: 0): the ``vs`` column says which;
- ``severity.png``: mean accuracy over each modality's corruptions against severity (0: clean).

Multi-label runs report mAP where this says accuracy (their ``robustness.json`` holds mAP on the same axes).
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import pandas as pd

from uvav.methods import FT, HEAD_ONLY
from uvav.reporting.formats import mean_std_of, metric_label, to_markdown

REFERENCES = (HEAD_ONLY, FT)  # paired against, in this order
KEYS = ("method", "train rate")


def label_of(result: dict[str, Any], mode: str) -> str:
    """A method's name in tables and curves: its result key and the run's variant (``ft+dropout``,
    ``pl_uncertain_joint``)."""
    return mode + result.get("variant", "")


def row_keys(result: dict[str, Any], mode: str) -> dict[str, Any]:
    """What identifies a run's row in every per-seed table: method (:func:`label_of`), training rate and seed."""
    return {"method": label_of(result, mode), "train rate": str(result.get("train_missing_rate")),
            "seed": result["seed"]}


def _modality_of() -> dict[str, str]:
    """Registered corruption -> the modality it corrupts."""
    from uvav.corruptions import CORRUPTIONS

    return {corruption.name: corruption.modality for corruption in CORRUPTIONS}


def per_seed(results: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per run and mode: the study's columns (module docstring) for that seed."""
    modality = _modality_of()
    rows = []
    for result in results:
        for mode, clean in (result.get("clean") or {}).items():
            row = {**row_keys(result, mode), "clean": clean}
            for kind in ("visual", "audio"):
                levels = [acc for name, accs in result["corruptions"].get(mode, {}).items()
                          if modality.get(name) == kind for acc in accs]
                if levels:
                    row[f"{kind} mCA"] = statistics.mean(levels)
                    row[f"{kind} relative"] = row[f"{kind} mCA"] / clean if clean else math.nan
            for kind in ("audio", "visual"):
                points = result["curves"].get(f"{kind}_missing_rate", {}).get(mode)
                if points:
                    row[f"{kind} missing (mean over rates)"] = statistics.mean(acc for _, acc in points)
            rows.append(row)
    return pd.DataFrame(rows)


def study_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over seeds of every column, per method and training rate."""
    values = [c for c in frame.columns if c not in (*KEYS, "seed")]
    return frame.groupby(list(KEYS))[values].agg(lambda col: mean_std_of(list(col.dropna()), show_n=False)) \
        .reset_index().assign(seeds=frame.groupby(list(KEYS))["seed"].nunique().to_numpy())


def paired_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Every method's columns minus a reference's on the same seed (module docstring), mean ± SE."""
    values = [c for c in frame.columns if c not in (*KEYS, "seed")]
    rows = []
    for reference in REFERENCES:
        ref = frame[frame["method"] == reference]
        for (method, rate), group in frame.groupby(list(KEYS)):
            if method == reference or ref.empty:
                continue
            rates = set(ref["train rate"])
            ref_rate = rate if rate in rates else "None" if "None" in rates else min(rates)
            base = ref[ref["train rate"] == ref_rate].set_index("seed")
            seeds = sorted(set(group["seed"]) & set(base.index))
            if not seeds:
                continue
            mine = group.set_index("seed")
            row = {"method": method, "train rate": rate, "vs": f"{reference} (train rate {ref_rate})",
                   "seeds": len(seeds)}
            for column in values:
                diffs = [mine.at[s, column] - base.at[s, column] for s in seeds]
                diffs = [d for d in diffs if not math.isnan(d)]
                row[column] = _mean_se(diffs)
            rows.append(row)
    return pd.DataFrame(rows)


def _mean_se(diffs: list[float]) -> str:
    if not diffs:
        return "-"
    mean = statistics.mean(diffs)
    if len(diffs) < 2:
        return f"{mean:+.3f}"
    return f"{mean:+.3f} ± {statistics.stdev(diffs) / math.sqrt(len(diffs)):.3f}"


def severity_curves(results: list[dict[str, Any]]) -> pd.DataFrame:
    """Per method, training rate, modality and severity (0: clean), the mean over seeds of the mean accuracy over
    that modality's corruptions."""
    modality = _modality_of()
    rows = []
    for result in results:
        for mode, by_name in (result.get("corruptions") or {}).items():
            base = row_keys(result, mode)
            for kind in ("visual", "audio"):
                chosen = [accs for name, accs in by_name.items() if modality.get(name) == kind]
                if not chosen:
                    continue
                rows.append({**base, "modality": kind, "severity": 0, "accuracy": result["clean"][mode]})
                for level, accs in enumerate(zip(*chosen, strict=True), start=1):
                    rows.append({**base, "modality": kind, "severity": level, "accuracy": statistics.mean(accs)})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    return frame.groupby([*KEYS, "modality", "severity"])["accuracy"].mean().reset_index()


def plot_severity(curves: pd.DataFrame, path: Path, metric: str = "accuracy") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds, colours = list(dict.fromkeys(curves["modality"])), plt.cm.tab20.colors
    fig, axes = plt.subplots(1, len(kinds), figsize=(6 * len(kinds), 4.5), sharey=True, squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        for k, ((method, rate), group) in enumerate(curves[curves["modality"] == kind].groupby(list(KEYS))):
            ax.plot(group["severity"], group["accuracy"], marker="os^"[k % 3], color=colours[k % len(colours)],
                    label=f"{method} (train rate {rate})")
        ax.set_title(f"{kind} corruptions (mean over types)")
        ax.set_xlabel("severity (0: clean)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"test {metric} (mean over seeds)")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_study(results: list[dict[str, Any]], out: Path) -> None:
    """``study``, ``paired`` (CSV and Markdown) and ``severity.png`` in ``out`` (module docstring)."""
    frame = per_seed(results)
    if frame.empty:
        return
    for name, table in (("study", study_table(frame)), ("paired", paired_table(frame))):
        table.to_csv(out / f"{name}.csv", index=False)
        (out / f"{name}.md").write_text(to_markdown(table) + "\n")
    curves = severity_curves(results)
    curves.to_csv(out / "severity.csv", index=False)
    plot_severity(curves, out / "severity.png", metric_label(r.get("metric") for r in results))
    print(f"wrote {out / 'study.md'}, {out / 'paired.md'} and {out / 'severity.png'}")
