"""Test-time missing rates (Missing-Aware Prompts' protocol): a per-sample table fixed by its seed, scored exactly as
the per-case scores of its two parts, and the same numbers as the case it reaches at rate 1."""

from __future__ import annotations

import contextlib

import pytest
import torch

from uvav.api import InputError, load_run
from uvav.config import NoiseConfig
from uvav.data.base import MissingTable, TensorSplit
from uvav.data.loading import LoaderOptions
from uvav.train import SALTS, Stage, evaluate_split

from .conftest import tiny_model


def split(n: int = 60) -> TensorSplit:
    gen = torch.Generator().manual_seed(3)
    return TensorSplit(torch.randn(n, 32, 32, generator=gen), torch.randn(n, 3, 16, 16, generator=gen),
                       torch.randint(0, 5, (n,), generator=gen))


def test_the_table_is_fixed_by_its_seed_and_nested_in_the_rate():
    data = split()
    low, high, again = MissingTable(data, 0.2, 0.1, 0), MissingTable(data, 0.5, 0.1, 0), MissingTable(data, 0.2, 0.1, 0)
    assert torch.equal(low.no_audio, again.no_audio) and torch.equal(low.no_image, again.no_image)
    assert bool((low.no_audio <= high.no_audio).all()) and not bool((low.no_audio & low.no_image).any())
    assert not torch.equal(MissingTable(data, 0.5, 0.0, 1).no_audio, high.no_audio)  # another seed, another table
    audio, visual = low.sample(int(low.no_audio.nonzero()[0]))
    assert not audio.any() and torch.equal(visual, data.sample(int(low.no_audio.nonzero()[0]))[1])
    with pytest.raises(ValueError, match="their sum at most 1"):
        MissingTable(data, 0.7, 0.5, 0)


@pytest.mark.parametrize("rate", [0.0, 0.3, 0.5, 1.0])
def test_a_table_scores_as_its_clean_and_missing_parts_do_sample_by_sample(rate):
    """Each prediction depends on its own sample only: the table's accuracy is the weighted sum of the complete
    case on the samples it keeps and of the missing case on those it drops (so the analytic curve
    (1 - r) acc(complete) + r acc(missing) is this number's expectation over tables)."""
    torch.manual_seed(0)
    stage = Stage.trained("ft", tiny_model(), None, ["complete"])
    data = split()
    table = MissingTable(data, rate, 0.0, 7)

    def accuracy(part, case, noise) -> float:
        return evaluate_split(stage, part, noise, SALTS["test"], ["none"], torch.device("cpu"), 16,
                              contextlib.nullcontext, LoaderOptions(0), [case]).values["none"][case]

    whole = accuracy(table, "complete", NoiseConfig())
    dropped = table.no_audio.nonzero().flatten()
    kept = (~table.no_audio).nonzero().flatten()
    parts = [(len(kept), accuracy(data.subset(kept), "complete", NoiseConfig()) if len(kept) else 0.0),
             (len(dropped), accuracy(data.subset(dropped), "noisy_audio", NoiseConfig(audio=["missing"]))
              if len(dropped) else 0.0)]
    assert whole == pytest.approx(sum(n * acc for n, acc in parts) / len(data), abs=1e-12)


def test_a_run_at_rate_one_scores_as_the_missing_case_and_refuses_what_a_table_cannot_say(synthetic_runs):
    run = load_run(synthetic_runs["pl"])
    table = run.evaluate(case="complete", prompts="uncertain", missing_visual=1.0, missing_seed=3)
    case = run.evaluate(case="noisy_visual", prompts="uncertain", **{"noise.visual": ["black"]})
    assert table["accuracy"]["pl_uncertain"]["complete"] == case["accuracy"]["pl_uncertain"]["noisy_visual"]
    assert table["missing_table"]["samples_without_image"] == table["num_samples"] and table["reference"] is None
    assert table["name"].endswith("-missing_a0_v1_s3")
    with pytest.raises(InputError, match="case=complete"):
        run.evaluate(case="mixed", prompts="uncertain", missing_audio=0.5)
    with pytest.raises(InputError, match="prompts=uncertain"):
        run.evaluate(case="complete", prompts="oracle", missing_audio=0.5)
