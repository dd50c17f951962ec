"""Robustness curves of a finished run: consistent with the run's own per-case accuracies."""

from __future__ import annotations

import json
import shutil

import pytest

from uvav.robustness import main, run_curves

from .conftest import TINY, run_cli


@pytest.mark.slow
def test_curves_agree_with_per_case_accuracy(tmp_path):
    run_cli(tmp_path, "method=pl", *TINY)
    run_dir = tmp_path / "run"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    result = run_curves(run_dir, severities=(0.0, 1.0), fractions=(0.0, 0.5, 1.0), missing_rates=(0.0, 0.5, 1.0))
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
    for modality, case in (("audio", "noisy_audio"), ("visual", "noisy_visual")):
        rates = dict(map(tuple, curves[f"{modality}_missing_rate"]["pl_uncertain"]))
        assert set(rates) == {0.0, 0.5, 1.0} and rates[0.0] == complete
        missing = {"noise.audio": ["missing"]} if modality == "audio" else {"noise.visual": ["black"]}
        whole = run_curves.__globals__["load_run"](run_dir).evaluate(case=case, prompts="uncertain", **missing)
        assert rates[1.0] == whole["accuracy"]["pl_uncertain"][case]  # every sample lost it: the missing case
    assert result["train_missing_rate"] is None  # the uniform draw over the four cases
    assert json.loads((run_dir / "robustness.json").read_text())["curves"] == curves
    main([str(run_dir), "--severities", "0", "1", "--missing-rates", "0", "1", "--out", str(tmp_path / "out")])
    assert (tmp_path / "out" / "robustness.png").stat().st_size > 0
    assert "pl_uncertain" in (tmp_path / "out" / "robustness.csv").read_text()


def test_curve_labels_carry_the_method_variant_on_every_mode():
    """Jobs of a method variant (PL trained as used) get their own curves, oracle included; others keep the key."""
    from uvav.robustness import tidy

    points = {"audio_severity": {"pl_uncertain": [[0.0, 0.9]], "pl_oracle": [[0.0, 0.8]]}}
    frame = tidy([{"run": "a", "seed": 0, "variant": "_joint", "curves": points},
                  {"run": "b", "seed": 0, "variant": "", "curves": points}])
    assert sorted(frame["mode"]) == ["pl_oracle", "pl_oracle_joint", "pl_uncertain", "pl_uncertain_joint"]


@pytest.mark.slow
def test_the_corruption_suite_table_gives_each_corruption_mca_and_relative_robustness(us8k_runs, tmp_path):
    from uvav.reporting.robustness import suite_table, write_summary

    run_dir = tmp_path / "pl"
    shutil.copytree(us8k_runs["pl"], run_dir)
    result = run_curves(run_dir, severities=(0.0,), fractions=(0.0,), missing_rates=(0.0,), suite="fog,gaussian_snr",
                        overrides={"paths.cache_dir": str(tmp_path / "cache")})  # its stores: not the shared runs'
    scores = result["corruptions"]["pl_uncertain"]
    assert set(scores) == {"fog", "gaussian_snr"} and all(len(levels) == 5 for levels in scores.values())
    (row,) = suite_table([result]).to_dict("records")
    every = [acc for levels in scores.values() for acc in levels]
    mca, clean = sum(every) / len(every), result["clean"]["pl_uncertain"]
    assert row["mCA"] == f"{mca:.3f}" and row["clean"] == f"{clean:.3f}" and row["train rate"] == "None"
    assert row["relative"] == f"{mca / clean:.3f}" and row["fog"] == f"{sum(scores['fog']) / 5:.3f}"
    write_summary([result], tmp_path / "out")
    assert "gaussian_snr" in (tmp_path / "out" / "corruptions.md").read_text()
    with pytest.raises(ValueError, match="no registered corruptions"):
        run_curves(run_dir, severities=(), fractions=(), missing_rates=(), suite="no_such")
