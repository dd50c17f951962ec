"""The pretrain -> FT / PL / head-only table of experiments/pretrain_av_mnist.sh, from the jobs' metrics.json.

    python experiments/pretrain_table.py --scratch DIR --pretrained DIR --pretrain DIR --out results/pretrain_av_mnist \
        [--title TEXT]

Each labelled job holds FT (method=ft) or FT, head only and PL (method=pl); its seed pairs the arm "from scratch"
with the arm "pretrained" (the checkpoint of the pretraining job with the same seed). Test split, every evaluation
case; the gain is pretrained - scratch per seed, then mean and standard deviation over seeds.
Writes table.md and runs.csv.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from uvav.cases import EVAL_CASES
from uvav.jobs import find_job_dirs, read_jobs
from uvav.record import read_record

RESULTS = {"ft": "FT", "head_only": "Head only", "pl_uncertain": "FT + PL (uncertain)"}


def labelled_runs(root: Path, arm: str) -> list[dict]:
    rows = []
    for job in read_jobs([root]):
        folder, metrics = job.path, job.metrics
        if metrics is None:
            raise SystemExit(f"{folder}: {job.reason}")
        for key, label in ((k, v) for k, v in RESULTS.items() if k in metrics["accuracy"]):
            rows += [{"arm": arm, "seed": metrics["seed"], "result": label, "case": case, "accuracy": acc,
                      "train_pairs": metrics["split"]["train"], "job": str(folder)}
                     for case, acc in metrics["accuracy"][key].items()]
    return rows


def pretraining_rows(root: Path) -> list[dict]:
    rows = []
    for folder in find_job_dirs([root]):
        metrics = read_record(folder / "metrics.json").to_dict()
        final = metrics["pretraining"]["final"]
        rows.append({"seed": metrics["seed"], **{k: round(v, 4) for k, v in final.items() if k != "epoch"},
                     "epochs": final["epoch"] + 1, "wall_time_s": metrics["wall_time_s"]})
    return sorted(rows, key=lambda r: r["seed"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("scratch", "pretrained", "pretrain", "out"):
        parser.add_argument(f"--{name}", type=Path, required=True)
    parser.add_argument("--title", default="Pretraining (method=pretrain) on av_mnist, then 10% of the labels")
    args = parser.parse_args()
    runs = pd.DataFrame(labelled_runs(args.scratch, "scratch") + labelled_runs(args.pretrained, "pretrained"))
    wide = runs.pivot_table(index=["result", "case", "seed"], columns="arm", values="accuracy").reset_index()
    wide["gain"] = wide["pretrained"] - wide["scratch"]
    summary = wide.groupby(["result", "case"], sort=False).agg(
        scratch=("scratch", "mean"), scratch_std=("scratch", "std"), pretrained=("pretrained", "mean"),
        pretrained_std=("pretrained", "std"), gain=("gain", "mean"), gain_std=("gain", "std"),
        min_gain=("gain", "min"), seeds=("seed", "nunique")).reset_index()
    order = {label: i for i, label in enumerate(RESULTS.values())}
    summary = summary.sort_values(["result", "case"], key=lambda s: s.map(order) if s.name == "result"
                                  else s.map(EVAL_CASES.index)).round(3)
    args.out.mkdir(parents=True, exist_ok=True)
    runs.to_csv(args.out / "runs.csv", index=False)
    pre = pd.DataFrame(pretraining_rows(args.pretrain))
    lines = [f"# {args.title}", "",
             f"Test accuracy, mean ± std over seeds {sorted(runs.seed.unique().tolist())}; training pairs with "
             f"labels: {sorted(runs.train_pairs.unique().tolist())}. Gain = pretrained − scratch, paired by seed.", "",
             "| result | case | from scratch | pretrained | gain | smallest gain |", "|---|---|---|---|---|---|"]
    for row in summary.itertuples():
        lines.append(f"| {row.result} | {row.case} | {row.scratch:.3f} ± {row.scratch_std:.3f} | "
                     f"{row.pretrained:.3f} ± {row.pretrained_std:.3f} | {row.gain:+.3f} ± {row.gain_std:.3f} | "
                     f"{row.min_gain:+.3f} |")
    lines += ["", "## Pretraining, last epoch (losses on the training and validation pairs)", "",
              "| " + " | ".join(pre.columns) + " |", "|" + "---|" * len(pre.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in pre.itertuples(index=False)]
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
