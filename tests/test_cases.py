"""The shared names: cases in case-id order, their effects and labels, and the one rule naming results."""

from __future__ import annotations

from uvav.cases import CASE_EFFECTS, CASE_INDEX, CASE_LABELS, CASES, EVAL_CASES, PROMPTED_MODES, Case, result_key


def test_cases_effects_and_labels_agree():
    assert CASES == ("complete", "noisy_audio", "noisy_visual", "noise_both")  # case ids index this order
    assert EVAL_CASES == (*CASES, "mixed") and set(CASE_LABELS) == set(EVAL_CASES)
    assert [CASE_INDEX[c] for c in CASES] == [0, 1, 2, 3] and list(CASE_EFFECTS) == list(CASES)
    assert len(set(CASE_EFFECTS.values())) == 4  # each case corrupts a different set of modalities
    assert Case.NOISY_AUDIO == "noisy_audio"  # the enum compares equal to the names configs and metrics use


def test_result_keys():
    assert result_key("ft", "none") == "ft" and result_key("lora", "none") == "lora"
    assert [result_key("pl", m) for m in PROMPTED_MODES] == ["pl_uncertain", "pl_oracle"]
