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
- ``audio_missing_rate`` / ``visual_missing_rate``: accuracy when a share r of the samples loses its audio / its
  image, r in 0, 0.1, ..., 1, under a per-sample missing table fixed by seed 0 (the same samples for every method:
  :class:`uvav.data.base.MissingTable`), prompt mode ``uncertain`` (a table states no case); the run's training
  rate (``scenario.missing_rate``) is recorded as ``train_missing_rate`` (None: the uniform draw over the cases;
  0 for a run trained on the complete case only);
- with ``--suite visual|audio|all|<names>``: ``corruptions[mode][name]`` = accuracy under each registered corruption
  (:mod:`uvav.corruptions`) at severities 1-5, complete case, mode ``uncertain``, and ``clean[mode]``.
With ``--out``: the curves of all runs in one CSV (mean and std over seeds per method and mode) and a plot; with a
suite, ``corruptions.csv``/``corruptions.md``: per method, training rate and mode the mean over seeds of each
corruption's accuracy (mean over severities), the mean corruption accuracy (mCA: over every corruption and
severity) and the relative robustness mCA / clean accuracy, and the study's tables with paired differences
(:mod:`uvav.reporting.robustness_study`). A run whose ``robustness.json`` was computed with the same settings for
the model it holds now is not scored again (``settings``, ``model_sha256``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pandas as pd

from uvav.cases import Case
from uvav.methods import METHODS
from uvav.outputs import atomic_write_json
from uvav.reporting.formats import metric_label
from uvav.reporting.robustness_study import label_of, row_keys, write_study

SEVERITIES = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
FRACTIONS = (0.0, 0.25, 0.5, 0.75, 1.0)
MISSING_RATES = tuple(round(0.1 * k, 1) for k in range(11))
SUITES = ("visual", "audio", "all")
DROPOUT_SCENARIO = "modality_dropout"  # conf/scenario/modality_dropout.yaml: FT with modality dropout


def run_curves(run: Any, path: str | Path, severities=SEVERITIES, fractions=FRACTIONS, missing_rates=MISSING_RATES,
               suite: str | None = None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Compute the curves of ``run`` (a :func:`uvav.load_run` of the folder ``path``) and write
    ``<path>/robustness.json``; returns its content. ``overrides``: of every evaluation (e.g. ``paths.cache_dir``,
    where the corrupted stores go)."""
    settings = {"severities": [float(s) for s in severities], "fractions": [float(f) for f in fractions],
                "missing_rates": [float(r) for r in missing_rates], "suite": suite, "overrides": overrides or {}}
    finished = _finished(Path(path), settings, run.metrics.get("model_sha256"))
    if finished is not None:  # its scores; what describes the run is read again (cheap, and may have been refined)
        described = {**finished, **describe(run)}
        if described != finished:
            atomic_write_json(Path(path) / "robustness.json", described)
        return described
    run = _Overridden(run, overrides or {})
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
    for modality in ("audio", "visual"):
        for rate in missing_rates:
            scored = run.evaluate(case="complete", prompts="uncertain", **{f"missing_{modality}": rate})["accuracy"]
            for mode, per_case in scored.items():
                points = curves.setdefault(f"{modality}_missing_rate", {}).setdefault(mode, [])
                points.append([rate, per_case["complete"]])
    result = {"run": str(Path(path).resolve()), **describe(run), "curves": curves, "settings": settings,
              "model_sha256": run.metrics.get("model_sha256"),
              **(suite_scores(run, suite) if suite else {}),
              "definition": __doc__.split("For each run:")[1].split("With ``--out``")[0].strip()}
    atomic_write_json(Path(path) / "robustness.json", result)
    return result


def describe(run: Any) -> dict[str, Any]:
    """What tells the run apart in tables: method, seed, metric, training missing rate (0 for a run trained on the
    complete case only, e.g. FT; None: the uniform draw over its training cases) and variant."""
    scenario = run.config.scenario
    rate = 0.0 if list(scenario.get("train_cases") or ()) == [Case.COMPLETE.value] else scenario.get("missing_rate")
    return {"method": run.method, "seed": run.config.seed, "metric": run.metrics.get("metric", "accuracy"),
            "train_missing_rate": rate, "variant": variant_of(run)}


def variant_of(run: Any) -> str:
    """The suffix telling runs of one method apart in tables and curves: the method's own (e.g. ``_joint``), and
    ``+dropout`` for a run trained with modality dropout (``scenario=modality_dropout``)."""
    dropout = "+dropout" if run.config.scenario.get("name") == DROPOUT_SCENARIO else ""
    return METHODS.get(run.method).variant(run.config.method) + dropout


def _finished(path: Path, settings: dict[str, Any], model_sha256: str | None) -> dict[str, Any] | None:
    """``<path>/robustness.json`` when it was computed with ``settings`` for the model the run holds now."""
    try:
        done = json.loads((path / "robustness.json").read_text())
    except (OSError, ValueError):
        return None
    if done.get("settings") != settings or model_sha256 is None or done.get("model_sha256") != model_sha256:
        return None
    return done


class _Overridden:
    """``run`` whose :meth:`evaluate` adds ``overrides`` to every call (the rest is the run's)."""

    def __init__(self, run: Any, overrides: dict[str, Any]) -> None:
        self._run, self._overrides = run, overrides

    def __getattr__(self, name: str) -> Any:
        return getattr(self._run, name)

    def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return self._run.evaluate(*args, **{**self._overrides, **kwargs})


def suite_scores(run: Any, suite: str) -> dict[str, Any]:
    """``corruptions[mode][name]`` (accuracy at severities 1-5) and ``clean[mode]`` of ``run`` under the registered
    corruptions of ``suite`` (visual, audio, all, or comma-separated names), complete case, mode ``uncertain``."""
    import os

    from uvav.corruptions import CORRUPTIONS
    from uvav.corruptions import SEVERITIES as LEVELS
    from uvav.corruptions.audio_environment import RECORDINGS_ENV

    chosen = None if suite in SUITES else suite.split(",")
    unknown = sorted(set(chosen or ()) - set(CORRUPTIONS.names()))
    if unknown:
        raise ValueError(f"--suite: {unknown} are no registered corruptions (one of {list(SUITES)}, or names)")
    clean = run.evaluate(case="complete", prompts="uncertain")["accuracy"]
    corruptions: dict[str, dict[str, list[float]]] = {}
    for corruption in CORRUPTIONS:
        if not (suite == "all" or corruption.modality == suite or corruption.name in (chosen or ())):
            continue
        if corruption.family == "environment" and not os.environ.get(RECORDINGS_ENV):
            continue  # READ's environmental noises: only with its recordings (uvav cannot ship them)
        for level in LEVELS:
            scored = run.evaluate(case="complete", prompts="uncertain", **{
                f"data.{corruption.modality}_corruption": corruption.name, "data.corruption_severity": level})
            for mode, per_case in scored["accuracy"].items():
                corruptions.setdefault(mode, {}).setdefault(corruption.name, []).append(per_case["complete"])
    return {"clean": {mode: per_case["complete"] for mode, per_case in clean.items()}, "corruptions": corruptions}


def suite_table(results: list[dict[str, Any]]) -> pd.DataFrame:
    """Per method, training missing rate and mode: each corruption's accuracy (mean over severities), clean, mCA
    (mean over every corruption and severity) and relative robustness (mCA / clean), as mean ± std over seeds."""
    from uvav.reporting.formats import mean_std_of

    per_seed = []
    for result in results:
        for mode, by_name in (result.get("corruptions") or {}).items():
            row = {**row_keys(result, mode), "clean": result["clean"][mode]}
            row.update({name: sum(levels) / len(levels) for name, levels in by_name.items()})
            every = [acc for levels in by_name.values() for acc in levels]
            row["mCA"] = sum(every) / len(every)
            row["relative"] = row["mCA"] / row["clean"] if row["clean"] else float("nan")
            per_seed.append(row)
    frame = pd.DataFrame(per_seed)
    if frame.empty:
        return frame
    values = [c for c in frame.columns if c not in ("method", "train rate", "seed")]
    return (frame.groupby(["method", "train rate"])[values]
            .agg(lambda col: mean_std_of(list(col), show_n=False)).reset_index())


def tidy(results: list[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for result in results:
        for axis, per_mode in result["curves"].items():
            for mode, points in per_mode.items():
                label = label_of(result, mode)  # e.g. pl_uncertain_joint: prompts trained as used
                if axis.endswith("missing_rate"):  # one line per training rate
                    label += f" (train rate {result.get('train_missing_rate')})"
                rows += [{"run": result["run"], "seed": result["seed"], "axis": axis, "mode": label, "x": x,
                          "accuracy": acc, "metric": result.get("metric", "accuracy")} for x, acc in points]
    return pd.DataFrame(rows)


def plot(summary: pd.DataFrame, path: Path, metric: str = "accuracy") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes_names = [a for a in ("audio_severity", "visual_severity", "fraction_missing", "audio_missing_rate",
                              "visual_missing_rate") if a in set(summary["axis"])]
    fig, axes = plt.subplots(1, len(axes_names), figsize=(5 * len(axes_names), 4), sharey=True, squeeze=False)
    axes = axes[0]
    for ax, axis in zip(axes, axes_names, strict=True):
        part = summary[summary["axis"] == axis]
        for mode, group in part.groupby("mode"):
            ax.errorbar(group["x"], group["mean"], yerr=group["std"].fillna(0), label=mode, marker="o", capsize=3)
        ax.set_title(axis.replace("_", " "))
        ax.set_xlabel("severity" if "severity" in axis else "test missing rate (per-sample table)"
                      if "rate" in axis else "fraction of samples missing a modality")
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
    parser.add_argument("--missing-rates", type=float, nargs="+", default=list(MISSING_RATES),
                        help="test-time missing rates of the per-sample tables")
    parser.add_argument("--suite", help="also score registered corruptions at severities 1-5: visual, audio, all, or "
                                         "comma-separated names")
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
    suite = suite_table(results)
    if not suite.empty:
        from uvav.reporting.formats import to_markdown

        suite.to_csv(out / "corruptions.csv", index=False)
        (out / "corruptions.md").write_text(to_markdown(suite) + "\n")
        print(f"wrote {out / 'corruptions.csv'} and {out / 'corruptions.md'}")
        write_study(results, out)
