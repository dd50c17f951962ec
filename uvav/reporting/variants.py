"""The variant table (``python -m uvav.compare <dirs> --variants --out DIR``): one row per result of every method
variant on every frozen base, each beside head only and the reference method (:attr:`uvav.methods.Method.reference`)
on that same base, paired by seed.

A *base* is what the frozen-base methods train on (``method.base``: the FT model, or a pretrained checkpoint not
fine-tuned) together with the stages' schedule (epochs, lr) and the training missing rate (``scenario.missing_rate``),
since all of them change head only too.
A *variant* is a result key with the method settings that tell jobs apart (:meth:`uvav.methods.Method.settings`),
e.g. a method's title, its prompt kind and length and its prompt mode.

Columns: test accuracy (mAP for multi-label data) per case (mean ± std over seeds); the mixed-case gain over head
only on the same base and seeds (mean ± standard error of the paired differences); the smallest paired gap to the
reference over the three noisy cases (mean per case, then the minimum); trainable parameters, time and memory per
epoch of the variant's stage; and whether a prompt variant that needs no case label (not oracle) meets the target
(gain >= 0.03 and > 2 SE, every noisy-case gap to the reference >= -0.02, fewer trainable parameters than it).
Rows on a base are in :attr:`uvav.methods.Method.variant_order`.
"""

from __future__ import annotations

import math
import os
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from uvav.cases import CASE_LABELS, CASES, EVAL_CASES, Case, PromptMode, result_key
from uvav.methods import FT, HEAD_ONLY, HEAD_ONLY_LABEL, METHODS, Method, reference_method
from uvav.outputs import atomic_write_bytes
from uvav.reporting.formats import mean_std_of, metric_label, to_markdown

NOISY = tuple(c for c in CASES if c != Case.COMPLETE.value)
MIXED = Case.MIXED.value
TARGET_GAIN, TARGET_REFERENCE_GAP = 0.03, -0.02  # a prompt variant's target: mixed gain, worst gap to the reference


def base_of(m: dict[str, Any]) -> str:
    """The frozen base a job's frozen-base results stand on, its stages' schedule and its training missing rate."""
    config = m["config"]
    method, trainer = config["method"], config.get("trainer") or {}
    base = method.get("base", "finetuned") if m["method"] != FT else "finetuned"
    rate = (config.get("scenario") or {}).get("missing_rate")
    schedule = f"{method.get('epochs') or trainer.get('epochs')} epochs at lr {method.get('lr') or trainer.get('lr')}"
    return f"{base}, {schedule}, missing rate {'uniform' if rate is None else rate}"


def variant_of(m: dict[str, Any], key: str) -> tuple[str, str]:
    """(variant label, stage) of result ``key`` of job ``m``."""
    if key == HEAD_ONLY:
        return HEAD_ONLY_LABEL, HEAD_ONLY
    if key == FT:
        return METHODS.get(FT).stage_label, FT
    method = METHODS.get(m["method"])
    mode = key.removeprefix(method.name).lstrip("_")
    settings = method.settings(m["config"]["method"], m["config"].get("prompt") or {})
    label = " ".join(part for part in (method.title, settings) if part)
    return (f"{label}, {mode}" if mode and mode != "conditioned" else label), method.name


def collect(jobs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[int, dict[str, Any]]]:
    """``{(base, variant): {seed: {"accuracy", "val", "job_dir", "stage"}}}``, the first job of each seed (head only
    and FT appear in every job of their base; with the same settings they are the same numbers)."""
    rows: dict[tuple[str, str], dict[int, dict[str, Any]]] = defaultdict(dict)
    for m in jobs:
        for key, per_case in m["accuracy"].items():
            if key == FT and (m["config"].get("scenario") or {}).get("missing_rate") is not None \
                    and m["method"] != FT:
                continue  # the FT base trained on its one case: shown once, on the uniform base
            label, stage = variant_of(m, key)
            rows[(base_of(m), label)].setdefault(m["seed"], {
                "accuracy": per_case, "val": (m.get("val") or {}).get(key) or {}, "job_dir": m.get("job_dir"),
                "stage_name": stage, "key": key, "stage": (m.get("stages") or {}).get(stage) or {}})
    return rows


def _stage_name(seeds: dict[int, dict]) -> str:
    return next(iter(seeds.values()))["stage_name"]


def _prompted(seeds: dict[int, dict]) -> bool:
    """A prompt variant that needs no case label at test (oracle prompts are told the case)."""
    record = next(iter(seeds.values()))
    name = record["stage_name"]
    return (name in METHODS.names() and METHODS.get(name).uses_prompts
            and record["key"] != result_key(name, PromptMode.ORACLE.value))


def best_prompt_variant(jobs: list[dict[str, Any]]) -> tuple[tuple[str, str], float, list[str]] | None:
    """((base, variant), its mean validation accuracy on the mixed case, its job folders, with those of the reference
    method on the same base) of the prompt variant with the best mean validation accuracy on the mixed case: the one
    the robustness curves follow (selected on validation, never on test); None without prompt variants."""
    rows = collect(jobs)
    scored = {k: statistics.mean(s["val"][MIXED] for s in seeds.values())
              for k, seeds in rows.items() if _prompted(seeds) and all(MIXED in s["val"] for s in seeds.values())}
    if not scored:
        return None
    best = max(scored, key=scored.get)
    reference = _reference_of(rows, best[0])
    folders = [s["job_dir"] for s in (*rows[best].values(), *(reference[1].values() if reference else ()))]
    return best, scored[best], sorted({f for f in folders if f})


def _paired(a: dict[int, dict], b: dict[int, dict] | None, case: str) -> list[float]:
    if not b:
        return []
    return [a[s]["accuracy"][case] - b[s]["accuracy"][case] for s in sorted(set(a) & set(b))
            if case in a[s]["accuracy"] and case in b[s]["accuracy"]]


def _reference_of(rows, base: str) -> tuple[str, dict[int, dict]] | None:
    """(label, seeds) of the reference method's row on ``base`` (:func:`uvav.methods.reference_method`)."""
    reference = reference_method()
    for (b, label), seeds in rows.items():
        if reference is not None and b == base and _stage_name(seeds) == reference.name:
            return label, seeds
    return None


def _trainable(seeds: dict[int, dict]) -> float | None:
    values = [s["stage"].get("params", {}).get("trainable") for s in seeds.values()]
    values = [v for v in values if v is not None]
    return statistics.mean(values) if values else None


def table(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One dict per (base, variant): the columns of the variant table, as strings and numbers."""
    rows = collect(jobs)
    out = []
    for (base, label), seeds in sorted(rows.items(), key=lambda item: (item[0][0], _order(item[1]), item[0][1])):
        head = rows.get((base, HEAD_ONLY_LABEL))
        reference = _reference_of(rows, base)
        gain = _paired(seeds, head, MIXED) if label != HEAD_ONLY_LABEL else []
        gaps = {c: _paired(seeds, reference[1], c) for c in NOISY} if reference and label != reference[0] else {}
        worst_gap = min((statistics.mean(g) for g in gaps.values() if g), default=None)
        se = statistics.stdev(gain) / math.sqrt(len(gain)) if len(gain) > 1 else None
        resources = [s["stage"].get("resources") or {} for s in seeds.values()]
        times = [r["time_per_epoch_s"] for r in resources if r.get("time_per_epoch_s") is not None]
        memory = [r["peak_train_memory_bytes"] / 2**20 for r in resources if r.get("peak_train_memory_bytes")]
        trainable, reference_trainable = _trainable(seeds), _trainable(reference[1]) if reference else None
        meets = None
        if (_prompted(seeds) and gain and se is not None and worst_gap is not None and trainable
                and reference_trainable):
            mean_gain = statistics.mean(gain)
            meets = (mean_gain >= TARGET_GAIN and mean_gain > 2 * se and worst_gap >= TARGET_REFERENCE_GAP
                     and trainable < reference_trainable)
        out.append({
            "Base": base, "Variant": label,
            **{CASE_LABELS[c]: mean_std_of([s["accuracy"][c] for s in seeds.values() if c in s["accuracy"]],
                                           show_n=False) for c in EVAL_CASES},
            "Mixed gain over head only (± SE)": (f"{statistics.mean(gain):+.3f}" + (f" ± {se:.3f}" if se else "")
                                                 if gain else "-"),
            f"Worst noisy-case gap to {_reference_title()}": f"{worst_gap:+.3f}" if worst_gap is not None else "-",
            "Trainable params": f"{trainable:.0f}" if trainable is not None else "-",
            "Time per epoch (s)": mean_std_of(times, show_n=False),
            "Training memory (MiB)": mean_std_of(memory, show_n=False),
            "Seeds": ",".join(map(str, sorted(seeds))), "Meets target": {None: "-", True: "yes", False: "no"}[meets],
        })
    return out


def _order(seeds: dict[int, dict]) -> int:
    """A row's place on its base: head only 1, every method's :attr:`~uvav.methods.Method.variant_order`."""
    stage = _stage_name(seeds)
    if stage == HEAD_ONLY:
        return 1
    return METHODS.get(stage).variant_order if stage in METHODS.names() else Method.variant_order


def _reference_title() -> str:
    reference = reference_method()
    return reference.title if reference else "the reference"


def write(jobs: list[dict[str, Any]], skipped: list[str], out: Path, inputs: list[Path]) -> str:
    import pandas as pd

    frame = pd.DataFrame(table(jobs))
    devices = sorted({m.get("device", "?") for m in jobs})
    best = best_prompt_variant(jobs)
    metric = metric_label(m.get("metric") for m in jobs)
    reference = _reference_title()
    best_line = (f"Best prompt variant on validation (mean mixed-case validation {metric} {best[1]:.3f}): "
                 f"{best[0][1]} on base {best[0][0]}; its job folders and {reference}'s on the same base are listed in "
                 "robustness_runs.txt (the runs of the robustness curves)." if best else "No prompt variant.")
    text = "\n".join([
        f"# Prompt variants beside head only, {reference} and the other methods on the same base", "",
        f"Inputs: {', '.join(str(p) for p in inputs)}; {len(jobs)} completed jobs, devices {devices}.",
        f"Test {metric}, mean ± sample std over seeds; each stage's epoch selected on validation. Base: the frozen "
        "model (finetuned: the FT model; pretrained: the backbone.checkpoint, not fine-tuned, new head) and "
        "the share of training samples given a corrupted case (uniform: one of the four cases each, 3 in 4 "
        "corrupted). Gains and gaps are paired by seed on the same base; SE = std of the paired differences / "
        "sqrt(n). Meets target (prompt variants that need no case label; oracle prompts are told it): mixed "
        f"gain >= {TARGET_GAIN} and > 2 SE, every noisy-case gap to {reference} >= {TARGET_REFERENCE_GAP}, fewer "
        f"trainable parameters than {reference}. "
        "Parameters include the head; time per epoch is the median after the "
        "first; memory: uvav/resources.py (CPU: peak of live tensors in one training step).", "",
        to_markdown(frame) if len(frame) else "(no jobs)", "", best_line, "",
        f"Jobs not completed (not used): {skipped or 'none'}", ""])
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "variants.md", text.encode())
    atomic_write_bytes(out / "variants.csv", frame.to_csv(index=False).encode())
    if best:
        runs = "".join(f"{os.path.relpath(folder)}\n" for folder in best[2])
        atomic_write_bytes(out / "robustness_runs.txt", runs.encode())
    return text
