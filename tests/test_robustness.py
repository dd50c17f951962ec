"""Robustness curves of a finished run: consistent with the run's own per-case accuracies."""

from __future__ import annotations

import json

import pytest

from uvav.robustness import main, run_curves

from .conftest import TINY, run_cli


@pytest.mark.slow
def test_curves_agree_with_per_case_accuracy(tmp_path):
    run_cli(tmp_path, "method=pl", *TINY)
    run_dir = tmp_path / "run"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    result = run_curves(run_dir, severities=(0.0, 1.0), fractions=(0.0, 0.5, 1.0))
    curves = result["curves"]
    assert set(curves["audio_severity"]) == {"pl_uncertain", "pl_oracle"}
    complete = metrics["accuracy"]["pl_uncertain"]["complete"]
    # severity 0 corrupts nothing: the complete-case accuracy; severity 1: the run's own noisy_audio number
    assert curves["audio_severity"]["pl_uncertain"][0] == [0.0, complete]
    assert curves["audio_severity"]["pl_uncertain"][1] == [1.0, metrics["accuracy"]["pl_uncertain"]["noisy_audio"]]
    assert curves["visual_severity"]["pl_oracle"][1][1] == metrics["accuracy"]["pl_oracle"]["noisy_visual"]
    fractions = curves["fraction_missing"]["pl_uncertain"]
    assert fractions[0] == [0.0, complete]
    assert fractions[1][1] == pytest.approx((fractions[0][1] + fractions[2][1]) / 2)
    assert json.loads((run_dir / "robustness.json").read_text())["curves"] == curves
    main([str(run_dir), "--severities", "0", "1", "--out", str(tmp_path / "out")])
    assert (tmp_path / "out" / "robustness.png").stat().st_size > 0
    assert "pl_uncertain" in (tmp_path / "out" / "robustness.csv").read_text()


def test_curve_labels_carry_the_method_variant_on_every_mode():
    """Jobs of a method variant (PL trained as used) get their own curves, oracle included; others keep the key."""
    from uvav.robustness import tidy

    points = {"audio_severity": {"pl_uncertain": [[0.0, 0.9]], "pl_oracle": [[0.0, 0.8]]}}
    frame = tidy([{"run": "a", "seed": 0, "variant": "_joint", "curves": points},
                  {"run": "b", "seed": 0, "variant": "", "curves": points}])
    assert sorted(frame["mode"]) == ["pl_oracle", "pl_oracle_joint", "pl_uncertain", "pl_uncertain_joint"]
