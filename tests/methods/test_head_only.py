"""``method=head_only``: the head-only baseline as a run of its own reproduces a frozen-base job's baseline, and
refuses settings that would make it something else."""

from __future__ import annotations

import pytest
import torch

from uvav.checks import validate
from uvav.config import ConfigError
from uvav.methods import HEAD_ONLY, METHODS, result_labels
from uvav.pipeline import run_pipeline

from ..conftest import compose_config

torch.set_num_threads(1)


def _history(metrics: dict) -> list[dict]:
    return [{k: v for k, v in epoch.items() if k != "time_s"} for epoch in metrics["stages"][HEAD_ONLY]["history"]]


def test_a_head_only_job_reproduces_the_baseline_of_a_pl_job_on_the_same_base(tmp_path):
    cache = f"paths.cache_dir={tmp_path / 'cache'}"
    common = ("seed=3", "method.epochs=2", cache)
    pl = run_pipeline(compose_config("method=pl", *common), tmp_path / "pl")
    alone = run_pipeline(compose_config("method=head_only", *common), tmp_path / "head_only")
    assert set(alone["accuracy"]) == {"ft", HEAD_ONLY} and alone["main_mode"] == HEAD_ONLY
    assert set(alone["stages"]) == {"ft", HEAD_ONLY}  # the baseline once: it is the method
    assert alone["stages"]["ft"]["reused"]  # the same FT model
    assert alone["accuracy"][HEAD_ONLY] == pl["accuracy"][HEAD_ONLY] and alone["val"] == {
        k: v for k, v in pl["val"].items() if k in alone["val"]}
    assert _history(alone) == _history(pl)
    trainable = alone["stages"][HEAD_ONLY]["params"]["trainable"]
    assert trainable == pl["stages"][HEAD_ONLY]["params"]["trainable"] < alone["stages"]["ft"]["params"]["total"]


def test_it_fills_the_head_only_column_and_refuses_a_second_baseline_or_a_frozen_head():
    assert METHODS.get(HEAD_ONLY).result_keys == [HEAD_ONLY]
    assert list(result_labels()).count(HEAD_ONLY) == 1
    for override, key in (("method.head_only_baseline=true", "method.head_only_baseline"),
                          ("method.train_head=false", "method.train_head")):
        with pytest.raises(ConfigError, match=key):
            validate(compose_config("method=head_only", override))
