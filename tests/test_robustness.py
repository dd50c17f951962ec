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


class _FakeRun:
    """A run whose evaluation counts its calls and scores every case 0.5 (what run_curves needs of a run)."""

    def __init__(self, sha: str, scenario: str = "all", method: str = "ft", cases=("complete", "noisy_audio")) -> None:
        from omegaconf import OmegaConf

        self.metrics, self.bank, self.method, self.calls = {"model_sha256": sha}, None, method, 0
        self.config = OmegaConf.create({"seed": 0, "method": {"name": method}, "scenario": {
            "name": scenario, "missing_rate": None, "train_cases": list(cases)}})

    def evaluate(self, case="all", prompts="uncertain", **overrides):
        self.calls += 1
        return {"accuracy": {self.method: {case: 0.5}}}


def test_a_finished_result_is_reused_only_for_the_same_settings_and_the_same_model(tmp_path):
    from uvav.reporting.robustness import run_curves as curves_of

    settings = {"severities": (0.0,), "fractions": (0.0,), "missing_rates": (0.0, 1.0)}
    first = _FakeRun("a")
    result = curves_of(first, tmp_path, **settings)
    assert first.calls > 0 and result["settings"]["missing_rates"] == [0.0, 1.0]
    again = _FakeRun("a")
    assert curves_of(again, tmp_path, **settings) == json.loads((tmp_path / "robustness.json").read_text())
    assert again.calls == 0  # nothing scored again
    for run, changed in ((_FakeRun("b"), settings),  # the weights changed: stored scores are not its own
                         (_FakeRun("a"), {**settings, "missing_rates": (0.0,)})):
        curves_of(run, tmp_path, **changed)
        assert run.calls > 0


def test_ft_with_modality_dropout_is_told_apart_from_ft():
    from uvav.reporting.robustness import describe

    dropout, ft = describe(_FakeRun("a", scenario="modality_dropout")), describe(_FakeRun("a", "complete", cases=[
        "complete"]))
    assert dropout["variant"] == "+dropout" and dropout["train_missing_rate"] is None  # the uniform draw
    assert ft["variant"] == "" and ft["train_missing_rate"] == 0.0  # trained on complete samples only


def _result(method: str, seed: int, rate, clean: float, visual: float, audio: float, variant: str = "") -> dict:
    """A robustness.json with one visual and one audio corruption at 5 severities and two missing rates."""
    return {"seed": seed, "train_missing_rate": rate, "variant": variant, "clean": {method: clean},
            "corruptions": {method: {"fog": [visual] * 5, "gaussian_snr": [audio] * 5}},
            "curves": {"audio_missing_rate": {method: [[0.0, clean], [1.0, audio]]},
                       "visual_missing_rate": {method: [[0.0, clean], [1.0, visual]]}}}


def test_the_study_tables_pair_each_method_with_head_only_and_ft_on_the_same_seed(tmp_path):
    from uvav.reporting.robustness_study import paired_table, per_seed, study_table, write_study

    results = [_result("head_only", s, None, 0.9, 0.6, 0.7) for s in (0, 1, 2)]
    results += [_result("head_only", s, 0.5, 0.9, 0.5, 0.7) for s in (0, 1, 2)]
    results += [_result("ft", s, None, 0.95, 0.4, 0.6, "+dropout") for s in (0, 1, 2)]
    results += [_result("pl_uncertain", s, 0.5, 0.9, 0.6 + 0.01 * s, 0.7) for s in (0, 1, 2)]
    frame = per_seed(results)
    row = frame[(frame["method"] == "ft+dropout") & (frame["seed"] == 0)].iloc[0]
    assert row["visual mCA"] == 0.4 and row["visual relative"] == pytest.approx(0.4 / 0.95)
    assert row["audio missing (mean over rates)"] == pytest.approx((0.95 + 0.6) / 2)
    study = study_table(frame).set_index(["method", "train rate"])
    dropout = study.loc[("ft+dropout", "None")]
    assert dropout["clean"] == "0.950 ± 0.000" and dropout["seeds"] == 3
    paired = paired_table(frame).set_index(["method", "train rate", "vs"])
    # PL at rate 0.5 against head only at rate 0.5: differences 0.1, 0.11, 0.12 -> mean 0.11, SE 0.01 / sqrt(3)
    se = 0.01 / 3 ** 0.5
    assert paired.loc[("pl_uncertain", "0.5", "head_only (train rate 0.5)"), "visual mCA"] == f"+0.110 ± {se:.3f}"
    # FT + dropout has no rate of head only's own: against its default
    assert paired.loc[("ft+dropout", "None", "head_only (train rate None)"), "clean"] == "+0.050 ± 0.000"
    assert ("head_only", "None", "head_only (train rate None)") not in paired.index
    # FT (trained on complete samples only: rate 0) is every method's reference at its one rate
    results += [_result("ft", s, 0.0, 0.95, 0.3, 0.6) for s in (0, 1, 2)]
    paired = paired_table(per_seed(results)).set_index(["method", "train rate", "vs"])
    assert paired.loc[("ft+dropout", "None", "ft (train rate 0.0)"), "visual mCA"] == "+0.100 ± 0.000"
    assert paired.loc[("head_only", "0.5", "ft (train rate 0.0)"), "visual mCA"] == "+0.200 ± 0.000"
    write_study(results, tmp_path)
    assert "pl_uncertain" in (tmp_path / "paired.md").read_text() and (tmp_path / "severity.png").stat().st_size
