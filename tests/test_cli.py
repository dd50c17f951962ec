"""The entrypoint as a user runs it: a multirun of both methods, and rejected overrides."""

from __future__ import annotations

import json
import subprocess

from .conftest import TINY, run_module


def test_multirun_ft_and_pl_writes_both_metrics(synthetic_runs):
    metrics = sorted(synthetic_runs["ft"].parent.glob("*/metrics.json"))
    assert len(metrics) == 2
    loaded = [json.loads(p.read_text()) for p in metrics]
    assert {m["method"] for m in loaded} == {"ft", "pl"}
    for m in loaded:
        assert m["status"] == "completed" and m["schema_version"] == 1
        assert m["choices"]["method"] == m["method"]
        assert m["environment"]["versions"]["torch"]
        assert m["stages"][m["method"]]["resources"]["time_per_epoch_s"] > 0
    pl = next(m for m in loaded if m["method"] == "pl")
    assert pl["stages"]["ft"]["reused"] is True  # trained once, by whichever job came first


def _run(tmp_path, *args: str) -> subprocess.CompletedProcess:
    return run_module("uvav.run", *args, f"paths.cache_dir={tmp_path / 'cache'}",
                      f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path,
                      check=False, full_error=False)


def test_bad_override_fails_clearly_and_writes_nothing(tmp_path):
    proc = _run(tmp_path, "method=pl", "prompt=none", *TINY)
    assert proc.returncode == 2
    assert "Invalid value 'none' for 'prompt'" in proc.stderr + proc.stdout
    assert not (tmp_path / "run").exists()
    assert not (tmp_path / "cache").exists()


def test_unknown_option_lists_the_allowed_ones(tmp_path):
    proc = _run(tmp_path, "scenario=sideways")
    assert proc.returncode == 2
    assert "Available options in 'scenario'" in proc.stderr and "noisy_audio" in proc.stderr
    assert not (tmp_path / "run").exists()
