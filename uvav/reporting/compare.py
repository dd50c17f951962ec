"""The method comparison table (layout of the authors' later README): one column per comparison column of the
registered methods (FT, the frozen-base methods, head only, prompts in each mode); per case, mean ± std over seeds;
plus trainable parameters, training memory and time per epoch per method.

    python -m uvav.compare <sweep dirs...> --out results/comparison_<name>

Reads every job folder under the inputs (jobs that are not usable finished jobs are listed, not used). The
columns are the registered methods' (:attr:`uvav.methods.Method.comparison`).
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path
from typing import Any

from uvav.cases import CASE_LABELS
from uvav.jobs import read_jobs
from uvav.methods import classifying, comparison_columns
from uvav.outputs import atomic_write_bytes
from uvav.reporting.formats import mean_std_of, metric_label, to_markdown


def load(roots: list[Path], every_config: bool = False) -> tuple[list[dict[str, Any]], list[str]]:
    """Usable finished jobs' metrics (:func:`uvav.jobs.read_jobs`), one per method, seed and the method
    settings its comparison columns tell apart (``every_config``: one per job config, the same job reused in
    several folders once); and the paths of the jobs that are not usable."""
    wanted = {(method.name, key) for method, column in comparison_columns() for key in column.where}
    jobs: dict[tuple, dict[str, Any]] = {}
    skipped = []
    for job in read_jobs(roots):
        folder = job.path
        if job.metrics is None:
            skipped.append(str(folder))
            continue
        m = job.metrics
        variant = tuple(sorted((k, str(m["config"]["method"].get(k))) for name, k in wanted if name == m["method"]))
        jobs.setdefault((m.get("job_key", str(folder)),) if every_config else (m["method"], variant, m["seed"]), m)
    return list(jobs.values()), skipped


def comparison(jobs: list[dict[str, Any]]) -> tuple[list[list[str]], list[list[str]]]:
    """(accuracy rows: case x column, resource rows: column x figure) as strings."""
    accuracy: dict[tuple[str, str], list[float]] = defaultdict(list)
    resources: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    columns = comparison_columns()
    for m in jobs:
        settings = m["config"]["method"]
        for method, col in columns:
            if m["method"] != method.name or any(settings.get(k) != v for k, v in col.where.items()):
                continue
            column = col.label
            for case, value in (m["accuracy"].get(col.key) or {}).items():
                accuracy[(column, case)].append(value)
            info = (m.get("stages") or {}).get(col.stage) or {}
            res, params = info.get("resources") or {}, info.get("params") or {}
            for key, value in (("trainable", params.get("trainable")),
                               ("memory_mib", (res.get("peak_train_memory_bytes") or 0) / 2**20 or None),
                               ("time_s", res.get("time_per_epoch_s"))):
                if value is not None:
                    resources[column][key].append(value)
    acc_rows = [[label, *(mean_std_of(accuracy[(col.label, case)]) for _, col in columns)]
                for case, label in CASE_LABELS.items()]
    res_rows = [[column, mean_std_of(r["trainable"], digits=0), mean_std_of(r["memory_mib"], digits=1),
                 mean_std_of(r["time_s"])]
                for column, r in ((col.label, resources[col.label]) for _, col in columns if col.label in resources)]
    return acc_rows, res_rows


def write(jobs: list[dict[str, Any]], skipped: list[str], out: Path, inputs: list[Path]) -> str:
    import pandas as pd

    acc_rows, res_rows = comparison(jobs)
    acc = pd.DataFrame(acc_rows, columns=["Case", *(col.label for _, col in comparison_columns())])
    res = pd.DataFrame(res_rows, columns=["Method", "Trainable params", "Training memory (MiB)",
                                          "Time per epoch (s)"])
    devices = sorted({m.get("device", "?") for m in jobs})
    seeds = sorted({m["seed"] for m in jobs})
    text = "\n".join([
        "# Method comparison", "",
        f"Inputs: {', '.join(str(p) for p in inputs)}; {len(jobs)} completed jobs, seeds {seeds}, devices {devices}.",
        " ".join([f"Test {metric_label(m.get('metric') for m in jobs)}, mean ± sample std over seeds.",
                  *(method.comparison_note for method in classifying() if method.comparison_note)]), "",
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
    parser.add_argument("--variants", action="store_true",
                        help="the variant table instead (uvav.reporting.variants): every method setting on every "
                             "base")
    args = parser.parse_args(argv)
    jobs, skipped = load(args.inputs, every_config=args.variants)
    if args.variants:
        from uvav.reporting import variants

        print(variants.write(jobs, skipped, args.out, args.inputs))
    else:
        print(write(jobs, skipped, args.out, args.inputs))


if __name__ == "__main__":
    import sys

    from uvav.errors import exit_code_of

    sys.exit(exit_code_of(main))
