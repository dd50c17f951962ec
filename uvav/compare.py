"""The method comparison table (layout of the authors' later README): FT, LoRA, Adapter, head only, prompts
(oracle), prompts (uncertain, per-scenario training), prompts (uncertain, trained as used); per case, mean ± std
over seeds; plus trainable parameters, training memory and time per epoch per method.

    python -m uvav.compare <sweep dirs...> --out results/comparison_<name>

Reads every ``metrics.json`` under the inputs (jobs that did not complete are listed, not used).
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from uvav.outputs import atomic_write_bytes, read_json
from uvav.tables import CASES, to_markdown

COLUMNS = {  # column -> (method, prompt_training or None, mode, stage for resources)
    "FT": ("ft", None, "ft", "ft"),
    "LoRA": ("lora", None, "lora", "lora"),
    "Adapter": ("adapter", None, "adapter", "adapter"),
    "Head only": ("pl", "per_scenario", "head_only", "head_only"),
    "Prompts (oracle)": ("pl", "per_scenario", "pl_oracle", "pl"),
    "Prompts (uncertain, per-scenario training)": ("pl", "per_scenario", "pl_uncertain", "pl"),
    "Prompts (uncertain, trained as used)": ("pl", "joint", "pl_uncertain", "pl"),
}


def load(roots: list[Path]) -> tuple[list[dict[str, Any]], list[str]]:
    """Completed jobs' metrics, one per (method, prompt_training, seed); and the paths of unusable ones."""
    jobs: dict[tuple, dict[str, Any]] = {}
    skipped = []
    for root in roots:
        for folder in sorted(p.parent.parent for p in root.rglob(".hydra/config.yaml")):
            metrics = read_json(folder / "metrics.json")
            if metrics is None or metrics.get("status") != "completed":
                skipped.append(str(folder))
                continue
            training = (metrics["config"]["method"].get("prompt_training") if metrics["method"] == "pl" else None)
            jobs.setdefault((metrics["method"], training, metrics["seed"]), metrics)
    return list(jobs.values()), skipped


def _mean_std(values: list[float], digits: int = 3) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f} (n=1)"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f} (n={len(values)})"


def comparison(jobs: list[dict[str, Any]]) -> tuple[list[list[str]], list[list[str]]]:
    """(accuracy rows: case x column, resource rows: column x figure) as strings."""
    accuracy: dict[tuple[str, str], list[float]] = defaultdict(list)
    resources: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for m in jobs:
        training = m["config"]["method"].get("prompt_training") if m["method"] == "pl" else None
        for column, (method, want_training, mode, stage) in COLUMNS.items():
            if m["method"] != method or (want_training and training != want_training):
                continue
            for case, value in (m["accuracy"].get(mode) or {}).items():
                accuracy[(column, case)].append(value)
            info = (m.get("stages") or {}).get(stage) or {}
            res, params = info.get("resources") or {}, info.get("params") or {}
            for key, value in (("trainable", params.get("trainable")),
                               ("memory_mib", (res.get("peak_train_memory_bytes") or 0) / 2**20 or None),
                               ("time_s", res.get("time_per_epoch_s"))):
                if value is not None:
                    resources[column][key].append(value)
    acc_rows = [[label, *(_mean_std(accuracy[(column, case)]) for column in COLUMNS)]
                for case, label in CASES.items()]
    res_rows = [[column, _mean_std(r["trainable"], 0), _mean_std(r["memory_mib"], 1), _mean_std(r["time_s"], 3)]
                for column, r in resources.items()]
    return acc_rows, res_rows


def write(jobs: list[dict[str, Any]], skipped: list[str], out: Path, inputs: list[Path]) -> str:
    import pandas as pd

    acc_rows, res_rows = comparison(jobs)
    acc = pd.DataFrame(acc_rows, columns=["Case", *COLUMNS])
    res = pd.DataFrame(res_rows, columns=["Method", "Trainable params", "Training memory (MiB)",
                                          "Time per epoch (s)"])
    devices = sorted({m.get("device", "?") for m in jobs})
    seeds = sorted({m["seed"] for m in jobs})
    text = "\n".join([
        "# Method comparison", "",
        f"Inputs: {', '.join(str(p) for p in inputs)}; {len(jobs)} completed jobs, seeds {seeds}, devices {devices}.",
        "Test accuracy, mean ± sample std over seeds. FT, LoRA, Adapter, head only and prompts share each seed's "
        "frozen FT model; every method but FT trains on all four cases. 'Uncertain' = all prompt sets "
        "concatenated, as when the case is unknown; 'trained as used' = method.prompt_training=joint.", "",
        to_markdown(acc), "",
        "Resources per method: trainable parameters (incl. the head), peak training memory and median time per "
        "epoch (after the first), as recorded in each job's metrics.json (uvav/resources.py: on CPU the peak of "
        "live tensors during one training step; on CUDA torch.cuda.max_memory_allocated).", "",
        to_markdown(res), "",
        f"Jobs not completed (not used): {skipped or 'none'}", ""])
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "comparison.md", text.encode())
    atomic_write_bytes(out / "comparison_accuracy.csv", acc.to_csv(index=False).encode())
    atomic_write_bytes(out / "comparison_resources.csv", res.to_csv(index=False).encode())
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    jobs, skipped = load(args.inputs)
    print(write(jobs, skipped, args.out, args.inputs))


if __name__ == "__main__":
    main()
