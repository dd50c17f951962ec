"""The FT -> PL pipeline in process: metrics, determinism, frozen weights, the shared FT model."""

from __future__ import annotations

import logging

import torch

from uvav.cases import EVAL_CASES
from uvav.outputs import fingerprint
from uvav.pipeline import ft_config, run_pipeline

from .conftest import compose_config


def test_pl_job_reports_every_mode_and_case(tmp_path):
    cfg = compose_config(f"paths.cache_dir={tmp_path / 'cache'}")
    metrics = run_pipeline(cfg, tmp_path / "job")
    assert set(metrics["accuracy"]) == {"ft", "head_only", "pl_uncertain", "pl_oracle"}
    for mode in ("ft", "head_only", "pl_uncertain", "pl_oracle"):
        assert set(metrics["accuracy"][mode]) == set(EVAL_CASES)
        assert all(0.0 <= acc <= 1.0 for acc in metrics["accuracy"][mode].values())
    pl = metrics["stages"]["pl"]
    assert pl["params"]["trainable"] < metrics["stages"]["ft"]["params"]["trainable"]
    assert pl["resources"]["peak_train_memory_bytes"] > 0
    assert metrics["objective"]["value"] == pl["best_val"]
    assert (tmp_path / "job" / "model.pt").exists()
    timing = metrics["timing"]  # where the time went: every stage trains and is evaluated; cached stages encode
    assert set(timing["train_s"]) == set(timing["evaluate_s"]) == {"ft", "head_only", "pl"}
    cached = {f"{s}_train" for s in ("head_only", "pl")  # the stages that built a cache of encoder outputs
              if (metrics["stages"][s]["resources"]["cached_features"] or {}).get("build_s")}
    assert cached and set(timing["encode_s"]) == cached | {"test", "val"}  # and the shared evaluation encodings
    parts = [timing["decode_s"], *(v for k in ("encode_s", "train_s", "evaluate_s") for v in timing[k].values())]
    assert all(s >= 0 for s in parts) and sum(parts) <= metrics["wall_time_s"]


def test_same_seed_same_metrics_and_other_seed_differs(tmp_path):
    runs = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        cfg = compose_config(f"paths.cache_dir={tmp_path / name}", f"seed={seed}", "method=ft")
        runs.append(run_pipeline(cfg, tmp_path / f"job_{name}"))
    assert runs[0]["accuracy"] == runs[1]["accuracy"]
    assert runs[0]["stages"]["ft"]["best_val"] == runs[1]["stages"]["ft"]["best_val"]
    ft_a = torch.load(tmp_path / "job_a" / "model.pt", weights_only=True)["model"]
    ft_b = torch.load(tmp_path / "job_b" / "model.pt", weights_only=True)["model"]
    ft_c = torch.load(tmp_path / "job_c" / "model.pt", weights_only=True)["model"]
    assert all(torch.equal(ft_a[k], ft_b[k]) for k in ft_a)
    assert not all(torch.equal(ft_a[k], ft_c[k]) for k in ft_a)


def test_pl_trains_only_prompts_and_head_and_reuses_the_ft_model(tmp_path):
    cache = tmp_path / "cache"
    ft_cfg = compose_config(f"paths.cache_dir={cache}", "method=ft")
    pl_cfg = compose_config(f"paths.cache_dir={cache}", "method=pl", "prompt=both")
    assert fingerprint(ft_config(ft_cfg)) == fingerprint(ft_config(pl_cfg))  # same FT model for both
    run_pipeline(ft_cfg, tmp_path / "ft")
    metrics = run_pipeline(pl_cfg, tmp_path / "pl")
    assert metrics["stages"]["ft"]["reused"] is True
    assert "ft" not in metrics["timing"]["train_s"] and "ft" in metrics["timing"]["evaluate_s"]  # found, not trained
    ft = torch.load(tmp_path / "ft" / "model.pt", weights_only=True)["model"]
    pl = torch.load(tmp_path / "pl" / "model.pt", weights_only=True)
    changed = {k for k in ft if not torch.equal(ft[k], pl["model"][k])}
    assert changed and all(k.startswith("head.") for k in changed)
    assert pl["bank"] is not None and "input_audio" in pl["bank"]


def test_pl_on_other_base_scenario_gets_its_own_ft_model(tmp_path):
    a = compose_config("method=pl")
    b = compose_config("method=pl", "method.base_scenario=noise_both")
    c = compose_config("method=pl", "trainer.progress=true", "trainer.eval_batch_size=7")
    assert fingerprint(ft_config(a)) != fingerprint(ft_config(b))
    assert fingerprint(ft_config(a)) == fingerprint(ft_config(c))


def test_the_default_ft_model_key_is_stable():
    """FT models cached by earlier versions are found again: a new setting must not change the key of the default
    config (add it to ``config.RUNTIME_KEYS`` when it cannot change the weights). Value: ``results/synthetic``'s
    seed-0 FT model (``runs.csv``, ``ft_model_key``) since ``MODEL_VERSION`` 2 (ee49ca55d3426461 before)."""
    assert fingerprint(ft_config(compose_config("method=pl", "seed=0", tiny=False))) == "52ad692b80dffc5a"


def test_models_made_by_older_model_code_are_not_reused(monkeypatch):
    """FT-model and job keys carry the model code's version: a model cached before a change to what the model
    computes (the LayerNorm eps fix) is retrained, not reused."""
    from uvav import execution, pipeline

    cfg = compose_config("method=pl", "seed=0")
    ft_before, job_before = fingerprint(ft_config(cfg)), execution.job_key(cfg)
    monkeypatch.setattr(pipeline, "MODEL_VERSION", pipeline.MODEL_VERSION - 1)
    monkeypatch.setattr(execution, "MODEL_VERSION", execution.MODEL_VERSION - 1)
    assert fingerprint(ft_config(cfg)) != ft_before and execution.job_key(cfg) != job_before


def test_label_fraction_keeps_a_stratified_share_of_the_training_split(tmp_path):
    import pytest
    from omegaconf import OmegaConf

    from uvav.checks import validate
    from uvav.config import ConfigError
    from uvav.data import load_data

    cfg = compose_config("method=ft", "data.label_fraction=0.25", f"paths.cache_dir={tmp_path / 'cache'}")
    full_cfg = OmegaConf.merge(cfg.data, {"label_fraction": 1.0})
    part, full = load_data(cfg.data), load_data(full_cfg)
    for c in range(full.num_classes):
        n = int((full.train.labels == c).sum())
        assert int((part.train.labels == c).sum()) == max(1, round(0.25 * n))  # per class, at least one
    assert len(part.val) == len(full.val) and len(part.test) == len(full.test)  # selection and test: all of them
    assert torch.equal(load_data(cfg.data).train.labels, part.train.labels)  # the same subset every time
    metrics = run_pipeline(cfg, tmp_path / "job")
    assert metrics["split"]["train"] == len(part.train) and metrics["data_info"]["label_fraction"]["fraction"] == 0.25
    assert fingerprint(ft_config(cfg)) != fingerprint(ft_config(compose_config("method=ft")))
    for bad in (0.0, 1.5):
        with pytest.raises(ConfigError, match="data.label_fraction"):
            validate(compose_config(f"data.label_fraction={bad}"))


def test_head_lr_scale_speeds_up_only_the_ft_head():
    """``trainer.head_lr_scale`` (CAV-MAE's head x10): the FT optimizer's head group has lr x scale; the default
    keeps the FT-model key; other values give their own FT model."""
    import pytest

    from uvav.checks import validate
    from uvav.config import ConfigError
    from uvav.train import Stage

    from .conftest import tiny_model

    model = tiny_model()
    stage = Stage.finetune(model, ["complete"], name="ft", epochs=1, lr=1e-4, weight_decay=0.0, head_lr_scale=10.0)
    groups = stage.param_groups()
    head = {id(p) for p in model.head.parameters()}
    assert [g["lr"] for g in groups] == [1e-4, 1e-3]
    assert {id(p) for p in groups[1]["params"]} == head and not head & {id(p) for p in groups[0]["params"]}
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    default = fingerprint(ft_config(compose_config("method=ft")))
    assert fingerprint(ft_config(compose_config("method=ft", "trainer.head_lr_scale=1.0"))) == default
    assert fingerprint(ft_config(compose_config("method=ft", "trainer.head_lr_scale=10"))) != default
    with pytest.raises(ConfigError, match="trainer.head_lr_scale"):
        validate(compose_config("trainer.head_lr_scale=0"))


def test_eval_batch_size_zero_runs_with_the_size_memory_allows(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="uvav.pipeline")
    cfg = compose_config("method=ft", "trainer.eval_batch_size=0", f"paths.cache_dir={tmp_path / 'cache'}")
    auto = run_pipeline(cfg, tmp_path / "auto")
    assert cfg.trainer.eval_batch_size == 256 and "evaluation batches of 256 rows" in caplog.text  # CPU's size
    fixed = run_pipeline(compose_config("method=ft", "trainer.eval_batch_size=256",
                                        f"paths.cache_dir={tmp_path / 'cache'}"), tmp_path / "fixed")
    assert auto["accuracy"] == fixed["accuracy"] and auto["val"] == fixed["val"]
