"""One rule of a usable finished job, shared by aggregation, the comparison, job reuse and load_run."""

from __future__ import annotations

import json

from uvav.jobs import group_choices, metrics_problem, read_finished
from uvav.record import SCHEMA_VERSION

GOOD = {"schema_version": SCHEMA_VERSION, "status": "completed", "accuracy": {"ft": {"complete": 0.5}},
        "objective": {"name": "val_acc", "value": 0.5}, "overrides": ["seed=0"]}


def test_each_rule_names_what_is_wrong():
    assert metrics_problem(GOOD) is None
    assert "not a JSON object" in metrics_problem([])
    assert "status is 'running'" in metrics_problem({**GOOD, "status": "running"})
    assert "schema_version 99" in metrics_problem({**GOOD, "schema_version": 99})
    assert "accuracy.ft" in metrics_problem({**GOOD, "accuracy": {"pl_uncertain": {}}})
    assert metrics_problem({**GOOD, "accuracy": {"cpl_conditioned": {}}, "main_mode": "cpl_conditioned"}) is None
    assert "objective is nan" in metrics_problem({**GOOD, "objective": {"value": float("nan")}})
    assert "stale" in metrics_problem(GOOD, overrides=["seed=1"])
    assert metrics_problem(GOOD, overrides=["seed=0"]) is None


def test_read_finished_needs_the_file_and_optionally_the_model(tmp_path):
    metrics, problem = read_finished(tmp_path)
    assert metrics is None and "no metrics.json" in problem
    (tmp_path / "metrics.json").write_text('{"status": "comp')
    assert "not valid JSON" in read_finished(tmp_path)[1]
    (tmp_path / "metrics.json").write_text(json.dumps(GOOD))
    assert read_finished(tmp_path) == (GOOD, None)
    assert "no model.pt" in read_finished(tmp_path, need_model=True)[1]
    (tmp_path / "model.pt").write_bytes(b"")
    assert read_finished(tmp_path, need_model=True)[0] == GOOD


def test_group_choices_keep_only_what_makes_an_experiment():
    choices = {"data": "synthetic", "method": "pl", "logger": "tensorboard", "method_recipe@_global_": "x/pl",
               "hydra/launcher": "slurm_ddp"}
    assert group_choices(choices) == {"data": "synthetic", "method": "pl"}
