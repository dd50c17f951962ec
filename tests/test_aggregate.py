"""``uvav.aggregate`` on job folders written here with known numbers: tables cell by cell, failed jobs, files."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from uvav import reporting
from uvav.cases import CASE_LABELS as CASES
from uvav.jobs import find_job_dirs, read_job
from uvav.reporting.aggregate import main
from uvav.reporting.formats import to_markdown

from .conftest import run_module

MIB = 2**20
SEEDS = (0, 1, 2)
MODES = ("ft", "head_only", "pl_uncertain", "pl_oracle")
RESOURCES = {  # stage: (peak bytes, seconds per epoch per seed, trainable, total)
    "ft": (100 * MIB, (2.0, 2.2, 2.4), 1000, 1000),
    "head_only": (10 * MIB, (0.5, 0.5, 0.5), 10, 1000),
    "pl": (20 * MIB, (0.25, 0.3, 0.35), 50, 1050),
}
MEMORY_METHOD = "peak bytes of live tensors during one training step"
TIME_METHOD = "median wall-clock of training epochs after the first"


def _accuracy(seed: int, modes=MODES) -> dict[str, dict[str, float]]:
    rng = np.random.default_rng(100 + seed)
    return {mode: {case: round(float(rng.uniform(0.3, 0.95)), 4) for case in CASES} for mode in modes}


def _metrics(seed: int, method: str = "pl", length: int = 4, **extra) -> dict:
    stages = ("ft", "head_only", "pl") if method == "pl" else ("ft",)
    modes = MODES if method == "pl" else ("ft",)
    config = {"data": {"name": "synthetic", "num_train": 96}, "method": {"name": method, "lr": 0.005},
              "prompt": {"kind": "attention" if method == "pl" else "none", "length": length},
              "scenario": {"name": "all" if method == "pl" else "complete"}, "seed": seed,
              "paths": {"cache_dir": f"/somewhere/{seed}"}, "trainer": {"progress": False, "epochs": 2}}
    return {
        "schema_version": 1, "status": "completed", "method": method, "seed": seed,
        "choices": {"data": "synthetic", "method": method}, "config": config,
        "overrides": [f"method={method}", f"seed={seed}", f"prompt.length={length}"],
        "train_cases": ["complete", "noisy_audio"], "accuracy": _accuracy(seed + 10 * length, modes),
        "objective": {"name": "val_acc", "value": 0.5}, "job_key": f"key-{method}-{length}-{seed}",
        "device": "cpu", "environment": {"device": "cpu", "device_name": "x86_64"},
        "stages": {s: {"key": f"ft-{seed}" if s == "ft" else None, "best_val": 0.5,
                       "params": {"trainable": RESOURCES[s][2], "total": RESOURCES[s][3]},
                       "resources": {"peak_train_memory_bytes": RESOURCES[s][0],
                                     "time_per_epoch_s": RESOURCES[s][1][seed % 3], "device": "cpu",
                                     "memory_method": MEMORY_METHOD, "time_method": TIME_METHOD}}
                   for s in stages},
        **extra,
    }


def _job(folder: Path, metrics: dict | str | None, overrides: list[str] | None = None) -> Path:
    (folder / ".hydra").mkdir(parents=True)
    if overrides is None:
        overrides = metrics["overrides"] if isinstance(metrics, dict) else ["seed=9"]
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (folder / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(
        {"hydra": {"runtime": {"choices": {"data": "synthetic", "method": "pl", "hydra/launcher": "basic"}}}}))
    if isinstance(metrics, dict):
        (folder / "metrics.json").write_text(json.dumps(metrics))
    elif isinstance(metrics, str):
        (folder / "metrics.json").write_text(metrics)
    return folder


@pytest.fixture
def sweep(tmp_path) -> Path:
    root = tmp_path / "sweep"
    for seed in SEEDS:
        _job(root / str(seed), _metrics(seed))
    _job(root / "3", _metrics(8, length=8))  # a second PL group (one seed)
    _job(root / "4", _metrics(0, method="ft"))
    # the same config and seed as job 0 again (a rerun that reused the finished job): counted once
    _job(tmp_path / "rerun" / "0", _metrics(0, reused_from=str(root / "0")))
    _job(root / "5", None, overrides=["seed=5"])  # killed before metrics.json
    _job(root / "6", json.dumps(_metrics(6))[:300], overrides=["seed=6"])  # half-written
    _job(root / "7", _metrics(7, status="failed"))
    return tmp_path


def _cell(values: list[float], signed: bool = False) -> str:
    mean, std = statistics.mean(values), statistics.stdev(values)
    return (f"{mean:+.3f}" if signed else f"{mean:.3f}") + f" ± {std:.3f} (n={len(values)})"


def test_tables_failed_jobs_and_files(sweep):
    out = sweep / "results"
    assert main([str(sweep / "sweep"), str(sweep / "rerun"), "--out", str(out), "--note", "made by the test"]) == 0
    assert "made by the test" in (out / "README.md").read_text()

    failed = pd.read_csv(out / "failed_jobs.csv")
    reasons = dict(zip(failed["job_dir"].map(lambda p: Path(p).name), failed["reason"], strict=True))
    assert set(reasons) == {"5", "6", "7"}
    assert "no metrics.json" in reasons["5"]
    assert "not valid JSON" in reasons["6"]
    assert "status is 'failed'" in reasons["7"]
    for name in ("5", "6", "7"):
        assert f"sweep/{name}" in (out / "failed_jobs.md").read_text()
        assert f"sweep/{name}" in (out / "README.md").read_text()

    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == (3 + 1) * len(MODES) * len(CASES) + len(CASES)  # duplicate counted once
    assert runs["group"].nunique() == 3

    # accuracy table of the 3-seed PL group, cell by cell
    metrics = [_metrics(seed) for seed in SEEDS]
    csv = pd.read_csv(out / "accuracy.csv")
    group = csv[csv["group_label"] == "method=pl prompt.length=4"]
    assert len(group) == len(CASES)
    table = group.set_index("Case")
    for case, label in CASES.items():
        per_mode = {mode: [m["accuracy"][mode][case] for m in metrics] for mode in MODES}
        assert table.loc[label, "FT"] == _cell(per_mode["ft"])
        assert table.loc[label, "Head only"] == _cell(per_mode["head_only"])
        assert table.loc[label, "FT + PL (uncertain)"] == _cell(per_mode["pl_uncertain"])
        assert table.loc[label, "FT + PL (oracle)"] == _cell(per_mode["pl_oracle"])
        gain = [u - f for u, f in zip(per_mode["pl_uncertain"], per_mode["ft"], strict=True)]
        assert table.loc[label, "Improvement (PL unc. - FT)"] == _cell(gain, signed=True)
        gain_head = [u - h for u, h in zip(per_mode["pl_uncertain"], per_mode["head_only"], strict=True)]
        assert table.loc[label, "Improvement over head only"] == _cell(gain_head, signed=True)
    values = pd.read_csv(out / "accuracy_values.csv")
    row = values[(values["group"] == group["group"].iloc[0]) & (values["case"] == "mixed")
                 & (values["column"] == "FT + PL (oracle)")].iloc[0]
    oracle = [m["accuracy"]["pl_oracle"]["mixed"] for m in metrics]
    assert row["n"] == 3
    assert np.isclose(row["mean"], np.mean(oracle)) and np.isclose(row["std"], np.std(oracle, ddof=1))

    # the FT-only group: an FT column only, and a single seed
    ft = csv[csv["group_label"].str.contains("method=ft")]
    assert ft["FT"].str.endswith("(n=1)").all() and "FT + PL (uncertain)" not in ft.dropna(axis=1).columns

    # resources: means over seeds, saving and ratio against FT
    res = pd.read_csv(out / "resources.csv")
    res = res[res["group"] == group["group"].iloc[0]].set_index("Method")
    ft_time, pl_time = np.mean(RESOURCES["ft"][1]), np.mean(RESOURCES["pl"][1])
    assert np.isclose(res.loc["PL", "Memory saving vs FT (%)"], 80.0)
    assert np.isclose(res.loc["Head only", "Memory saving vs FT (%)"], 90.0)
    assert np.isclose(res.loc["PL", "Time ratio vs FT"], pl_time / ft_time)
    assert np.isclose(res.loc["FT", "Time per epoch (s)"], ft_time)
    assert res.loc["PL", "Trainable params"] == 50 and res.loc["PL", "Total params"] == 1050
    assert res.loc["PL", "Memory method"] == MEMORY_METHOD and res.loc["PL", "Time method"] == TIME_METHOD
    md = (out / "resources.md").read_text()
    assert "| PL | 20.00 | 80.0% |" in md and "total memory" in md

    for name in ("accuracy.md", "accuracy.tex", "resources.tex", "groups.csv", "README.md"):
        assert (out / name).stat().st_size > 0
    assert r"$\pm$" in (out / "accuracy.tex").read_text()
    pngs = {p.name for p in out.glob("*.png")}
    assert len([p for p in pngs if p.startswith("accuracy_")]) == 4  # 3 groups + accuracy_vs_prompt_length
    assert "accuracy_vs_prompt_length.png" in pngs and any(p.startswith("resources_") for p in pngs)


def test_stale_metrics_and_nan_objective_are_failed(tmp_path):
    stale = _job(tmp_path / "0", _metrics(0), overrides=["method=pl", "seed=0", "prompt.length=2"])
    nan = _job(tmp_path / "1", _metrics(1, objective={"name": "val_acc", "value": float("nan")}))
    assert "stale" in read_job(stale).reason
    assert "objective is nan" in read_job(nan).reason
    assert find_job_dirs([tmp_path]) == [stale, nan]


def test_nothing_found_is_an_error_not_a_crash(tmp_path, capsys):
    assert main([str(tmp_path), "--out", str(tmp_path / "out")]) == 1
    assert "None." in (tmp_path / "out" / "failed_jobs.md").read_text()


def test_markdown_escapes_pipes():
    assert to_markdown(pd.DataFrame({"a": ["x|y"]})) == "| a |\n|---|\n| x\\|y |"


def test_runtime_overrides_split_no_group_and_name_none(tmp_path):
    """``trainer.num_threads`` and ``logger`` are GROUPING_NEUTRAL: jobs differing only in them share a group, and
    group labels (of several groups) never show them."""
    for seed, (threads, logger) in enumerate([(1, "csv"), (2, "none")]):
        metrics = _metrics(seed)
        metrics["config"]["trainer"]["num_threads"] = threads
        metrics["config"]["logger"] = {"name": logger}
        metrics["overrides"] += [f"trainer.num_threads={threads}", f"logger={logger}"]
        _job(tmp_path / "sweep" / str(seed), metrics)
    _job(tmp_path / "sweep" / "9", _metrics(0, length=8))  # another group: labels name what differs
    out = tmp_path / "out"
    assert main([str(tmp_path / "sweep"), "--out", str(out), "--no-plots"]) == 0
    groups = pd.read_csv(out / "groups.csv")
    assert len(groups) == 2 and sorted(groups["n"]) == [1, 2]
    assert not groups["group_label"].str.contains("num_threads|logger").any()
    assert set(groups["group_label"]) == {"prompt.length=4", "prompt.length=8"}


@pytest.mark.parametrize("module", ["uvav.aggregate", "uvav.compare", "uvav.robustness"])
def test_the_old_entrypoints_still_run(module, tmp_path):
    """The commands that moved into ``uvav.reporting`` keep their ``python -m`` names (recipes call them)."""
    proc = run_module(module, "--help", cwd=tmp_path)
    assert proc.returncode == 0 and "usage:" in proc.stdout and "--out" in proc.stdout


def test_reporting_code_names_no_method_or_dataset():
    """Names live in their registry entries: reporting asks the registries (no quoted name in its code)."""
    from uvav.data import DATASETS
    from uvav.methods import METHODS

    names = [*METHODS.names(), *DATASETS.names()]
    for path in Path(reporting.__file__).parent.glob("*.py"):
        text = path.read_text()
        assert not [n for n in names if f'"{n}"' in text or f"'{n}'" in text or f"={n}" in text], path.name
