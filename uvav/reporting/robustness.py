"""Robustness curves of finished runs: accuracy against corruption severity per modality, and against the
fraction of samples that lose a modality.

    python -m uvav.robustness <run dirs...> [--severities 0 0.25 0.5 1 2 4] [--out results/robustness_x]

For each run: ``<run>/robustness.json`` with, per inference mode,
- ``audio_severity``: test accuracy on ``noisy_audio`` with ``noise.severity`` = s (audio corrupted only),
- ``visual_severity``: the same on ``noisy_visual``,
- ``fraction_missing``: expected accuracy when a fraction f of the samples loses one modality (audio zeroed or
  image black, each with probability f/2): (1 - f) acc(complete) + f/2 acc(audio missing) + f/2 acc(image
  missing), exact from the three per-case accuracies on the whole test set (evaluation is per sample).
Multi-label runs (``metric``: mAP) report test mAP on the same axes; their ``fraction_missing`` is the same
weighted mean of the per-case mAPs (mAP does not add over samples, so it is not the mAP of such a mixed set).
With ``--out``: the curves of all runs in one CSV (mean and std over seeds per method and mode) and a plot.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pandas as pd

from uvav.methods import METHODS
from uvav.outputs import atomic_write_json
from uvav.reporting.formats import metric_label

SEVERITIES = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
FRACTIONS = (0.0, 0.25, 0.5, 0.75, 1.0)


def run_curves(run: Any, path: str | Path, severities=SEVERITIES, fractions=FRACTIONS) -> dict[str, Any]:
    """Compute the curves of ``run`` (a :func:`uvav.load_run` of the folder ``path``) and write
    ``<path>/robustness.json``; returns its content."""
    prompts = "all" if run.bank is not None else "uncertain"
    curves: dict[str, dict[str, list[list[float]]]] = {"audio_severity": {}, "visual_severity": {},
                                                       "fraction_missing": {}}
    for axis, case in (("audio_severity", "noisy_audio"), ("visual_severity", "noisy_visual")):
        for severity in severities:
            accuracy = run.evaluate(case=case, prompts=prompts, **{"noise.severity": severity})["accuracy"]
            for mode, per_case in accuracy.items():
                curves[axis].setdefault(mode, []).append([severity, per_case[case]])
    missing = {"noise.audio": ["missing"], "noise.visual": ["black"]}
    parts = {case: run.evaluate(case=case, prompts=prompts, **missing)["accuracy"]
             for case in ("complete", "noisy_audio", "noisy_visual")}
    for mode in parts["complete"]:
        acc = {case: parts[case][mode][case] for case in parts}
        curves["fraction_missing"][mode] = [
            [f, (1 - f) * acc["complete"] + f / 2 * (acc["noisy_audio"] + acc["noisy_visual"])] for f in fractions]
    result = {"run": str(Path(path).resolve()), "method": run.method, "seed": run.config.seed,
              "metric": run.metrics.get("metric", "accuracy"),
              "variant": METHODS.get(run.method).variant(run.config.method), "curves": curves,
              "definition": __doc__.split("For each run:")[1].split("With ``--out``")[0].strip()}
    atomic_write_json(Path(path) / "robustness.json", result)
    return result


def tidy(results: list[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for result in results:
        for axis, per_mode in result["curves"].items():
            for mode, points in per_mode.items():
                label = mode + result.get("variant", "")  # e.g. pl_uncertain_joint: prompts trained as used
                rows += [{"run": result["run"], "seed": result["seed"], "axis": axis, "mode": label, "x": x,
                          "accuracy": acc, "metric": result.get("metric", "accuracy")} for x, acc in points]
    return pd.DataFrame(rows)


def plot(summary: pd.DataFrame, path: Path, metric: str = "accuracy") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes_names = ["audio_severity", "visual_severity", "fraction_missing"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4), sharey=True)
    for ax, axis in zip(axes, axes_names, strict=True):
        part = summary[summary["axis"] == axis]
        for mode, group in part.groupby("mode"):
            ax.errorbar(group["x"], group["mean"], yerr=group["std"].fillna(0), label=mode, marker="o", capsize=3)
        ax.set_title(axis.replace("_", " "))
        ax.set_xlabel("severity" if "severity" in axis else "fraction of samples missing a modality")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"test {metric} (mean ± std over seeds)")
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parser() -> argparse.ArgumentParser:
    """The command line of ``python -m uvav.robustness``."""
    parser = argparse.ArgumentParser(prog="python -m uvav.robustness", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run folders (with model.pt and metrics.json)")
    parser.add_argument("--severities", type=float, nargs="+", default=list(SEVERITIES))
    parser.add_argument("--out", help="folder for robustness.csv and robustness.png over all runs")
    return parser


def write_summary(results: list[dict[str, Any]], out: Path) -> None:
    """``robustness.csv`` (mean, std and count over seeds per axis, mode and x) and ``robustness.png`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    frame = tidy(results)
    summary = (frame.groupby(["axis", "mode", "x"])["accuracy"].agg(["mean", "std", "count"]).reset_index())
    summary.to_csv(out / "robustness.csv", index=False)
    plot(summary, out / "robustness.png", metric_label(frame["metric"]))
    print(f"wrote {out / 'robustness.csv'} and {out / 'robustness.png'}")
