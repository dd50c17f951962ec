"""What a finished run may be evaluated on: overrides of its data, noise and runtime settings (never of the model),
checked against the schemas, and the name an evaluation is saved under."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from uvav.checks import register_configs, validate
from uvav.config import (
    EVALUATION_NEUTRAL,
    ConfigError,
    NoiseConfig,
    PathsConfig,
    TrainerConfig,
    config_dir,
)
from uvav.data import DATASETS
from uvav.errors import InputError, RunError
from uvav.outputs import fingerprint
from uvav.registry import UnknownNameError

FEATURE_KEYS = ("target_length", "num_mel_bins", "image_size")  # the model was built for these
EVAL_TRAINER_KEYS = ("device", "precision", "eval_batch_size", "num_threads")


def evaluation_config(run_config: DictConfig, path: Path, overrides: Mapping[str, Any]) -> DictConfig:
    """A run's config with evaluation overrides applied and checked (see :meth:`uvav.api.Run.evaluate`)."""
    choice, flat = split_overrides(overrides)
    cfg = OmegaConf.to_container(run_config, resolve=True)
    try:
        if choice is None:
            data = OmegaConf.merge(OmegaConf.structured(_data_schema(run_config.data.name, path)), cfg["data"])
        else:
            data = compose_data_group(choice)
            for key in FEATURE_KEYS:  # the model was built for the run's feature shapes
                data[key] = run_config.data[key]
        sections = {"data": data, "noise": OmegaConf.merge(OmegaConf.structured(NoiseConfig), cfg["noise"]),
                    "trainer": OmegaConf.merge(OmegaConf.structured(TrainerConfig), cfg["trainer"]),
                    "paths": OmegaConf.merge(OmegaConf.structured(PathsConfig), cfg["paths"])}
    except OmegaConfBaseException as exc:
        raise RunError(f"{path}: the run's config does not fit this uvav version's schema: {exc}") from exc
    for key, value in flat.items():
        section, _, rest = key.partition(".")
        allowed = ((section in ("data", "noise") and rest) or (section == "trainer" and rest in EVAL_TRAINER_KEYS)
                   or key == "paths.cache_dir")
        if not allowed:
            raise InputError(
                f"cannot override {key!r} when evaluating a trained run (the model is fixed); allowed: "
                f"data=<dataset>, data.<key>, noise.<key>, trainer.{{{','.join(EVAL_TRAINER_KEYS)}}}, "
                "paths.cache_dir")
        try:
            OmegaConf.update(sections[section], rest, value, merge=True)
        except OmegaConfBaseException as exc:
            raise InputError(f"override {key}={value!r}: {exc}") from exc
    for key in FEATURE_KEYS:
        if sections["data"][key] != run_config.data[key]:
            raise InputError(f"data.{key}={sections['data'][key]}: the model was built for "
                             f"data.{key}={run_config.data[key]} and cannot take other features")
    kept = {k: v for k, v in cfg.items() if k != "logger"}  # nothing trains: no training curves (or their package)
    out = OmegaConf.create({**kept, **{k: OmegaConf.to_container(v, resolve=True) for k, v in sections.items()}})
    try:
        validate(out)
    except ConfigError as exc:
        raise InputError(str(exc)) from exc
    return out


def split_overrides(overrides: Mapping[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """``(data group choice or None, {dotted key: value})`` from dotted or nested overrides."""
    choice, flat = None, {}
    for key, value in override_items(overrides):
        if key == "data":
            choice = str(value)
        else:
            flat[key] = value
    return choice, flat


def override_items(overrides: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in overrides.items():
        full = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from override_items(value, f"{full}.")
        elif full == "data" and not isinstance(value, str):
            raise InputError(f"data={value!r}: a dataset name (data=av_mnist) or a mapping of data keys")
        else:
            yield full, value


def evaluation_name(split: str, case: str, prompts: str, overrides: Mapping[str, Any]) -> str:
    """``<split>-<case>-<prompts>[-<key=value,...>]``, file-name safe; long names end in a hash."""
    parts = sorted(f"{k}={_compact(v)}" for k, v in override_items(overrides) if k not in EVALUATION_NEUTRAL)
    name = "-".join([split, case, prompts, *([",".join(parts)] if parts else [])])
    name = re.sub(r"[^A-Za-z0-9._=,+-]+", "_", name)
    return name if len(name) <= 120 else f"{name[:100]}-{fingerprint(name)[:12]}"


def _compact(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_compact(v) for v in value) + "]"
    return str(value)


def _data_schema(name: str, path: Path) -> type:
    try:
        return DATASETS.get(name).schema
    except UnknownNameError as exc:
        raise RunError(f"{path}: {exc}") from exc


def compose_data_group(choice: str) -> DictConfig:
    """The ``data`` node of ``conf/config.yaml`` composed with ``data=<choice>`` (Hydra's own composition,
    also when called inside another Hydra app)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    register_configs()
    gh = GlobalHydra.instance()
    outer = gh.hydra if gh.is_initialized() else None
    gh.clear()
    try:
        with initialize_config_dir(config_dir(), version_base="1.3"):
            return compose("config", overrides=[f"data={choice}"]).data
    except HydraException as exc:
        raise InputError(f"data={choice}: {exc}") from exc
    finally:
        if outer is not None:
            GlobalHydra.instance().hydra = outer
