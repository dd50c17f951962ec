"""The entrypoint as a user runs it: a multirun of both methods, and a rejected override."""

from __future__ import annotations

import json

import pytest

from .conftest import TINY, run_cli


@pytest.mark.slow
def test_multirun_ft_and_pl_writes_both_metrics(tmp_path):
    run_cli(tmp_path, "-m", "method=ft,pl", *TINY)
    metrics = sorted((tmp_path / "sweep").glob("*/metrics.json"))
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


def test_bad_override_fails_clearly_and_writes_nothing(tmp_path):
    proc = run_cli(tmp_path, "method=pl", "prompt=none", *TINY, check=False)
    assert proc.returncode != 0
    assert "Invalid value 'none' for 'prompt'" in proc.stderr + proc.stdout
    assert not (tmp_path / "run").exists()
    assert not (tmp_path / "cache").exists()


def test_unknown_option_lists_the_allowed_ones(tmp_path):
    proc = run_cli(tmp_path, "scenario=sideways", check=False)
    assert proc.returncode != 0
    assert "Available options in 'scenario'" in proc.stderr and "noisy_audio" in proc.stderr
    assert not (tmp_path / "run").exists()
