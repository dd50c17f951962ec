"""Every group option composes; schemas reject unknown keys, wrong types and bad combinations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from uvav.checks import validate
from uvav.config import ConfigError, config_dir
from uvav.models.classifier import AVClassifier

from .conftest import compose_config

GROUPS = ["data", "backbone", "prompt", "scenario", "method", "trainer"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(config_dir()) / group).glob("*.yaml"))


def assert_sets(expected: Any, actual: Any, where: str) -> None:
    """Every value that ``expected`` (a YAML's content) sets is in ``actual`` (the composed config), unresolved."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), where
        for key, value in expected.items():
            assert key in actual, f"{where}.{key}"
            assert_sets(value, actual[key], f"{where}.{key}")
    else:
        assert actual == expected, where


@pytest.mark.parametrize("group", GROUPS)
def test_every_option_composes(group):
    composed = {}
    for option in options(group):
        extra = ["data.root=/nowhere"] if option == "urbansound8k_av" else []
        cfg = compose_config(f"{group}={option}", *extra, tiny=False)
        file = Path(config_dir()) / group / f"{option}.yaml"
        yaml = OmegaConf.to_container(OmegaConf.load(file))
        yaml.pop("defaults", None)
        # conf/method/*.yaml and scenario/modality_dropout.yaml (it sets noise.* too): `# @package _global_`
        package = cfg if file.read_text().startswith("# @package _global_") else cfg[group]
        assert_sets(yaml, OmegaConf.to_container(package), f"{group}={option}")
        composed[option] = OmegaConf.to_container(cfg[group])
        if group == "method" or (group == "prompt" and option == "none"):
            continue
        validate(cfg)
    distinct = {json.dumps(c, sort_keys=True, default=str) for c in composed.values()}
    assert len(distinct) == len(composed), f"two {group} options compose to the same config"


def test_backbones_instantiate():
    for option in options("backbone"):
        cfg = compose_config(f"backbone={option}", tiny=False)
        if option == "cavmae_base":
            continue  # 178M parameters: its sizes are checked in tests/models/test_classifier.py
        model = AVClassifier.from_config(cfg.backbone, cfg.data, 8)
        assert model.audio.num_tokens > 0 and model.visual.num_tokens > 0


def test_method_defaults_pick_scenario_and_cli_wins():
    assert list(compose_config("method=ft").scenario.train_cases) == ["complete"]
    assert compose_config("method=ft").prompt.kind == "none"
    assert len(compose_config("method=pl").scenario.train_cases) == 4
    assert list(compose_config("method=ft", "scenario=noisy_audio").scenario.train_cases) == ["noisy_audio"]
    assert list(compose_config("method=pl", "scenario=noise_both").scenario.train_cases) == ["noise_both"]


@pytest.mark.parametrize(
    "override, error",
    [
        ("trainer.unknown_key=1", ConfigCompositionException),
        ("trainer.epochs=many", (ConfigCompositionException, ValidationError)),
        ("scenario=sometimes", MissingConfigException),
        ("backbone=cavmae_huge", MissingConfigException),
    ],
)
def test_schema_errors(override, error):
    with pytest.raises(error):
        compose_config(override)


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["method=pl", "prompt=none"], "prompt"),
        (["prompt.length=0"], "prompt.length"),
        (["data.target_length=8"], "data.target_length"),
        (["noise.audio=[gaussian,hiss]"], "noise.audio"),
        (["scenario.train_cases=[complete,sideways]"], "scenario.train_cases"),
        (["trainer.device=tpu"], "trainer.device"),
        (["+trainer.unknown_key=1"], "trainer.unknown_key"),
        (["objective=test_acc"], "objective"),
        (["method.cache_features=on", "prompt=input"], "method.cache_features"),
        (["paths.encodings_gb=-1"], "paths.encodings_gb"),
    ],
)
def test_impossible_combinations_name_the_key(overrides, key):
    cfg = compose_config(*overrides)
    with pytest.raises(ConfigError, match=f"'{key}'"):
        validate(cfg)


def test_settings_added_later_keep_committed_group_ids_at_their_default():
    from uvav.config import GROUPED_OFF_DEFAULT_ONLY, grouping_settings

    cfg = OmegaConf.to_container(compose_config("method=pl", tiny=False), resolve=True)
    before = {**cfg, "data": {k: v for k, v in cfg["data"].items()
                              if f"data.{k}" not in GROUPED_OFF_DEFAULT_ONLY}}  # a config of before they existed
    assert grouping_settings(cfg) == grouping_settings(before)
    corrupted = {**cfg, "data": {**cfg["data"], "visual_corruption": "fog"}}
    assert grouping_settings(corrupted)["data.visual_corruption"] == "fog"
