"""``python -m uvav.evaluate`` and ``Run.evaluate``: the saved model reproduces the run's own numbers exactly."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from uvav.api import InputError, RunError, load_run
from uvav.cases import EVAL_CASES

from .conftest import run_module

PL_MODES = ("pl_uncertain", "pl_oracle")


@pytest.fixture
def runs(synthetic_runs, tmp_path) -> dict[str, Path]:
    """Copies of the shared tiny FT and PL runs (the PL job reused the FT model), by method: evaluations write
    into a run's folder."""
    copies = {}
    for method, run in synthetic_runs.items():
        copies[method] = tmp_path / "runs" / run.name
        shutil.copytree(run, copies[method])
    return copies


def evaluate_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m uvav.evaluate`` run from ``tmp_path/cwd`` with ``$TMPDIR`` at ``tmp_path/tmp``."""
    cwd, tmp = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir(exist_ok=True)
    tmp.mkdir(exist_ok=True)
    return run_module("uvav.evaluate", *args, cwd=cwd, env={"TMPDIR": str(tmp)})


def snapshot(run: Path) -> dict[str, bytes]:
    """Every file of a run folder outside evaluations/, by relative path."""
    return {str(p.relative_to(run)): p.read_bytes() for p in run.rglob("*")
            if p.is_file() and "evaluations" not in p.relative_to(run).parts}


def test_cli_reproduces_both_runs_and_touches_nothing_else(runs, tmp_path):
    before = {m: snapshot(d) for m, d in runs.items()}
    proc = evaluate_cli(tmp_path, "-m", f"run={runs['ft']},{runs['pl']}", "prompts=all")
    for method, run in runs.items():
        metrics = json.loads((run / "metrics.json").read_text())
        name = "test-all-ft" if method == "ft" else "test-all-all"
        result = json.loads((run / "evaluations" / f"{name}.json").read_text())
        modes = ("ft",) if method == "ft" else PL_MODES
        assert result["accuracy"] == {m: metrics["accuracy"][m] for m in modes}
        assert set(result["accuracy"][modes[0]]) == set(EVAL_CASES)
        assert result["matches_reference"] is True and result["num_samples"] == 48
        assert snapshot(run) == before[method]  # metrics.json (bytes) and the rest untouched
        assert sorted(p.name for p in (run / "evaluations").iterdir()) == [f"{name}.json"]
    assert "pl_uncertain" in proc.stdout and "noise_both" in proc.stdout  # the table
    assert not any((tmp_path / "cwd").iterdir())  # Hydra writes nothing in the current folder ...
    assert (tmp_path / "tmp" / "uvav_evaluate_sweeps").is_dir()  # ... a sweep's files go to $TMPDIR


@pytest.mark.parametrize("method", ["ft", "pl"])
@pytest.mark.parametrize("split", ["test", "val"])
def test_api_reproduces_every_mode_and_case(synthetic_runs, method, split):
    run = load_run(synthetic_runs[method])
    metrics = run.metrics["accuracy" if split == "test" else "val"]
    for prompts in ("uncertain", "oracle"):
        result = run.evaluate(prompts=prompts, split=split, **{"trainer.num_threads": 1})
        mode = "ft" if method == "ft" else f"pl_{prompts}"
        assert result["accuracy"] == {mode: metrics[mode]}
        assert result["reference"] == {mode: metrics[mode]}
    assert not (synthetic_runs[method] / "evaluations").exists()  # save=False


def test_cli_sweep_over_cases_with_overrides(runs, tmp_path):
    pl = runs["pl"]
    metrics_bytes = (pl / "metrics.json").read_bytes()
    evaluate_cli(tmp_path, "-m", f"run={pl}", "case=complete,noise_both", "prompts=uncertain",
                 "noise.severity=0.5", "data.num_test=20")
    for case in ("complete", "noise_both"):
        name = f"test-{case}-uncertain-data.num_test=20,noise.severity=0.5"
        result = json.loads((pl / "evaluations" / f"{name}.json").read_text())
        assert list(result["accuracy"]) == ["pl_uncertain"] and list(result["accuracy"]["pl_uncertain"]) == [case]
        assert result["num_samples"] == 20 and result["reference"] is None
        assert result["overrides"] == {"noise.severity": 0.5, "data.num_test": 20}
        assert result["noise"]["severity"] == 0.5
    assert (pl / "metrics.json").read_bytes() == metrics_bytes


def test_cli_refuses_model_changing_overrides_clearly(synthetic_runs, tmp_path):
    proc = run_module("uvav.evaluate", f"run={synthetic_runs['ft']}", "trainer.epochs=3",
                      cwd=tmp_path, check=False, full_error=False)
    assert proc.returncode == 2
    assert "cannot override 'trainer.epochs'" in proc.stderr
    proc = run_module("uvav.evaluate", f"run={tmp_path}", cwd=tmp_path, check=False, full_error=False)
    assert proc.returncode == 2 and "missing model.pt, metrics.json, .hydra/config.yaml" in proc.stderr


def test_api_rejects_what_the_model_cannot_take(synthetic_runs):
    run = load_run(synthetic_runs["pl"])
    with pytest.raises(InputError, match="data.image_size=64: the model was built for data.image_size=32"):
        run.evaluate(**{"data.image_size": 64})
    with pytest.raises(InputError, match="has classes"):
        run.evaluate(data="av_mnist")
    with pytest.raises(InputError, match="case='sideways'"):
        run.evaluate(case="sideways")
    with pytest.raises(InputError, match="noise.visual"):
        run.evaluate(noise={"visual": ["smudge"]})


def test_incomplete_or_foreign_runs_say_what_is_missing(synthetic_runs, tmp_path):
    runs = synthetic_runs
    broken = tmp_path / "broken"
    shutil.copytree(runs["ft"], broken)
    (broken / "model.pt").unlink()
    with pytest.raises(RunError, match="missing model.pt.*cannot be rebuilt"):
        load_run(broken)
    shutil.copy(runs["ft"] / "model.pt", broken / "model.pt")
    metrics = json.loads((broken / "metrics.json").read_text())
    (broken / "metrics.json").write_text(json.dumps({**metrics, "schema_version": 99}))
    with pytest.raises(RunError, match="schema_version 99"):
        load_run(broken)
    with pytest.raises(RunError, match="does not exist"):
        load_run(tmp_path / "nowhere")


def test_runs_saved_before_the_per_method_schemas_still_load(synthetic_runs, tmp_path):
    """Runs saved before issue 12 carry every method's fields in ``config.method`` (one lumped schema); they load
    and reproduce their numbers."""
    old = tmp_path / "old"
    shutil.copytree(synthetic_runs["pl"], old)
    metrics = json.loads((old / "metrics.json").read_text())
    metrics["config"]["method"].update({"lora_rank": 4, "lora_alpha": None, "lora_targets": ["attn.qkv"],
                                        "adapter_bottleneck": 16})
    (old / "metrics.json").write_text(json.dumps(metrics))
    result = load_run(old).evaluate(case="mixed", prompts="all")
    assert result["matches_reference"] is True


def test_cli_scores_a_run_under_corruptions_of_the_suite_at_each_severity(us8k_runs, tmp_path):
    run = tmp_path / "ft"
    shutil.copytree(us8k_runs["ft"], run)
    evaluate_cli(tmp_path, "-m", f"run={run}", "case=complete", "data.visual_corruption=gaussian_noise,fog",
                 "data.corruption_severity=1,5", f"paths.cache_dir={tmp_path / 'cache'}")  # its stores: not the run's
    clean = json.loads((run / "metrics.json").read_text())
    for name in ("gaussian_noise", "fog"):
        for severity in (1, 5):
            file = f"test-complete-ft-data.corruption_severity={severity},data.visual_corruption={name}.json"
            result = json.loads((run / "evaluations" / file).read_text())
            assert result["reference"] is None  # not the run's own test set: no reference to match
            assert result["data"]["visual_corruption"] == name and result["data"]["corruption_severity"] == severity
            assert result["num_samples"] == clean["split"]["test"] and set(result["accuracy"]["ft"]) == {"complete"}
