"""Registering the config schemas with Hydra, and the checks of a composed config that span several keys.

The entrypoints (:mod:`uvav.run`, :mod:`uvav.evaluate`, :mod:`uvav.predict`) call :func:`register_configs` before
Hydra composes and :func:`validate` before any work. Both ask the method and dataset registries, whose modules
import nothing heavy at the top, so a bad override is refused before torch is imported.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from uvav.cases import CASES, EVAL_CASES
from uvav.config import (
    AUDIO_NOISES,
    PROMPT_KINDS,
    VISUAL_NOISES,
    BackboneConfig,
    Config,
    ConfigError,
    LoggerConfig,
    PromptConfig,
    ScenarioConfig,
    TrainerConfig,
    require,
)


def register_configs() -> None:
    """Register the schemas so that ``conf/<group>/<option>.yaml`` can extend them via their defaults list: the
    common ones, and ``<name>_schema`` of every registered dataset (group ``data``) and method (group ``method``);
    the ``uvav_now`` resolver of run folders and the ``uvav_loggers`` resolver of the logger group's choice."""
    from uvav.data import DATASETS
    from uvav.distributed import launch_time
    from uvav.loggers import chosen_loggers
    from uvav.methods import METHODS

    # run and sweep folders: Hydra's `now`, but one time for every rank of a distributed launch
    OmegaConf.register_new_resolver("uvav_now", launch_time, use_cache=True, replace=True)
    OmegaConf.register_new_resolver("uvav_loggers", chosen_loggers, replace=True)  # logger=[csv,mlflow]

    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    for dataset in DATASETS:
        cs.store(group="data", name=f"{dataset.name}_schema", node=dataset.schema)
    for method in METHODS:
        cs.store(group="method", name=f"{method.name}_schema", node=method.schema)
    cs.store(group="backbone", name="backbone_schema", node=BackboneConfig)
    cs.store(group="prompt", name="prompt_schema", node=PromptConfig)
    cs.store(group="scenario", name="scenario_schema", node=ScenarioConfig)
    cs.store(group="trainer", name="trainer_schema", node=TrainerConfig)
    cs.store(group="logger", name="logger_schema", node=LoggerConfig)


def _check_known_keys(node: DictConfig, path: str) -> None:
    """Keys appended with ``+key=value`` bypass the schema in Hydra; reject those the schema does not know."""
    schema = OmegaConf.get_type(node)
    if not dataclasses.is_dataclass(schema):
        return
    known = {f.name for f in dataclasses.fields(schema)}
    for key in node:
        where = f"{path}.{key}" if path else str(key)
        require(key in known, where, node[key], f"not a known key; allowed: {sorted(known)}")
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            _check_known_keys(child, where)


def _check_logger(cfg: DictConfig) -> None:
    """Known loggers, their packages installed (checked before any work). A config without the section (an
    evaluation's, a run's from before it existed) logs nothing."""
    from uvav.loggers import logger_problem

    problem = logger_problem(cfg.get("logger"))
    if problem:
        raise ConfigError(problem)


def _check_prompt_depth(cfg: DictConfig) -> None:
    prompt, backbone = cfg.prompt, cfg.backbone
    require(1 <= prompt.depth <= backbone.depth, "prompt.depth", prompt.depth,
            f"1 .. backbone.depth ({backbone.depth}): the encoder blocks with prompts of their own")
    require(0 <= prompt.shared_depth <= backbone.shared_depth, "prompt.shared_depth", prompt.shared_depth,
            f"0 .. backbone.shared_depth ({backbone.shared_depth})")
    if prompt.depth > 1 or prompt.shared_depth:
        require(prompt.kind in ("input", "both"), "prompt.kind", prompt.kind,
                "input or both with prompt.depth > 1 or prompt.shared_depth > 0 (deep prompts are input-level)")


def _check_prompt_length(cfg: DictConfig) -> None:
    """At most ``uvav.preflight.PROMPT_LENGTH_FACTOR`` x the smaller modality's patch tokens."""
    from uvav.preflight import PROMPT_LENGTH_FACTOR, max_prompt_length

    if cfg.data.target_length < cfg.backbone.patch_size or cfg.data.image_size < (
            cfg.backbone.image_patch_size or cfg.backbone.patch_size):
        return  # no patch at all: the token checks below name the key
    bound = max_prompt_length(cfg)
    require(cfg.prompt.length <= bound, "prompt.length", cfg.prompt.length,
            f"at most {bound} ({PROMPT_LENGTH_FACTOR} x the smaller modality's patch tokens, "
            f"{bound // PROMPT_LENGTH_FACTOR}, from data.target_length, data.num_mel_bins, data.image_size and "
            "backbone.patch_size / image_patch_size)")


def _check_missing_rate(scenario: DictConfig) -> None:
    rate = scenario.missing_rate
    if rate is None:
        return
    require(0.0 <= rate <= 1.0, "scenario.missing_rate", rate, "in [0, 1], or null for a uniform draw over the cases")
    cases = set(scenario.train_cases)
    require("complete" in cases and len(cases) > 1, "scenario.train_cases", sorted(cases),
            "complete and at least one corrupted case when scenario.missing_rate is set (e.g. scenario=all)")


def _check_recipe(cfg: DictConfig) -> None:
    """The FT recipe options (:mod:`uvav.recipe`); the weight-averaged epochs must be epochs FT trains."""
    from uvav.methods import ft_schedule

    t = cfg.trainer
    require(t.optimizer in ("adamw", "adam"), "trainer.optimizer", t.optimizer, "adamw or adam")
    require(len(t.betas) == 2 and all(0 <= b < 1 for b in t.betas), "trainer.betas", list(t.betas),
            "two numbers in [0, 1), e.g. [0.95, 0.999]")
    require(t.lr_schedule in ("cosine", "step"), "trainer.lr_schedule", t.lr_schedule, "cosine or step")
    require(t.lr_step_start >= 0, "trainer.lr_step_start", t.lr_step_start, ">= 0")
    require(t.lr_step_every >= 1, "trainer.lr_step_every", t.lr_step_every, ">= 1")
    require(0 < t.lr_step_decay <= 1, "trainer.lr_step_decay", t.lr_step_decay, "in (0, 1]")
    require(0 <= t.mixup <= 1, "trainer.mixup", t.mixup, "in [0, 1] (the share of samples mixed)")
    require(0 <= t.label_smoothing < 1, "trainer.label_smoothing", t.label_smoothing, "in [0, 1)")
    if t.wa_start is None and t.wa_end is None:
        return
    epochs = ft_schedule(cfg)[0]
    require(t.wa_start is not None and t.wa_end is not None, "trainer.wa_start", t.wa_start,
            "set with trainer.wa_end (both, or neither for the best epoch on validation)")
    require(1 <= t.wa_start <= t.wa_end <= epochs, "trainer.wa_end", t.wa_end,
            f"1 <= trainer.wa_start ({t.wa_start}) <= trainer.wa_end <= the FT epochs ({epochs}); epochs count from 1")


def validate(cfg: DictConfig) -> None:
    """Reject combinations that compose but cannot run. Raises :class:`ConfigError` naming key and allowed values.
    The checks of one method's own fields are that method's (:meth:`uvav.methods.Method.check`)."""
    from uvav.methods import METHODS
    from uvav.registry import UnknownNameError

    _check_known_keys(cfg, "")
    try:
        method = METHODS.get(cfg.method.name)
    except UnknownNameError as exc:
        raise ConfigError(f"method.name: {exc}") from exc
    require(cfg.prompt.kind in PROMPT_KINDS, "prompt.kind", cfg.prompt.kind, f"one of {list(PROMPT_KINDS)}")
    require(cfg.prompt.length > 0, "prompt.length", cfg.prompt.length, "a positive integer")
    _check_prompt_length(cfg)
    for case in cfg.scenario.train_cases:
        require(case in CASES, "scenario.train_cases", case, f"each one of {list(CASES)}")
    require(len(cfg.scenario.train_cases) > 0, "scenario.train_cases", [], "at least one case")
    _check_prompt_depth(cfg)
    _check_missing_rate(cfg.scenario)
    require(cfg.data.num_workers is None or cfg.data.num_workers >= 0, "data.num_workers", cfg.data.num_workers,
            ">= 0 (0: in the main process), or null for every core")
    patch_a = cfg.backbone.patch_size
    patch_v = cfg.backbone.image_patch_size or patch_a
    require(cfg.data.target_length >= patch_a, "data.target_length", cfg.data.target_length,
            f"at least one patch: >= backbone.patch_size ({patch_a})")
    require(cfg.data.num_mel_bins >= patch_a, "data.num_mel_bins", cfg.data.num_mel_bins,
            f">= backbone.patch_size ({patch_a})")
    require(cfg.data.image_size >= patch_v, "data.image_size", cfg.data.image_size,
            f">= the image patch size ({patch_v})")
    require(cfg.backbone.embed_dim % cfg.backbone.num_heads == 0, "backbone.embed_dim",
            cfg.backbone.embed_dim, f"a multiple of backbone.num_heads ({cfg.backbone.num_heads})")
    require(0.0 < cfg.data.val_fraction < 1.0, "data.val_fraction", cfg.data.val_fraction, "in (0, 1)")
    require(0.0 < cfg.data.label_fraction <= 1.0, "data.label_fraction", cfg.data.label_fraction, "in (0, 1]")
    require(cfg.data.on_bad_file in ("error", "skip"), "data.on_bad_file", cfg.data.on_bad_file,
            "error or skip")
    for kind in cfg.noise.audio:
        require(kind in AUDIO_NOISES, "noise.audio", kind, f"each one of {list(AUDIO_NOISES)}")
    for kind in cfg.noise.visual:
        require(kind in VISUAL_NOISES, "noise.visual", kind, f"each one of {list(VISUAL_NOISES)}")
    require(cfg.noise.severity >= 0, "noise.severity", cfg.noise.severity, ">= 0")
    require(cfg.paths.encodings_gb >= 0, "paths.encodings_gb", cfg.paths.encodings_gb,
            ">= 0 (0: no encodings kept across jobs)")
    for key in ("epochs", "batch_size"):
        require(cfg.trainer[key] > 0, f"trainer.{key}", cfg.trainer[key], "a positive integer")
    require(cfg.trainer.eval_batch_size >= 0, "trainer.eval_batch_size", cfg.trainer.eval_batch_size,
            "a positive integer, or 0 for as large as memory allows")
    require(cfg.trainer.lr > 0, "trainer.lr", cfg.trainer.lr, "> 0")
    require(cfg.trainer.head_lr_scale > 0, "trainer.head_lr_scale", cfg.trainer.head_lr_scale, "> 0")
    _check_recipe(cfg)
    require(cfg.trainer.precision in ("auto", "fp32", "bf16"), "trainer.precision", cfg.trainer.precision,
            "auto, fp32 or bf16")
    device = cfg.trainer.device
    require(device in ("auto", "cpu", "cuda") or device.startswith("cuda:"), "trainer.device", device,
            "auto, cpu, cuda or cuda:N")
    _check_logger(cfg)
    _check_path_settings(cfg)
    objective = cfg.objective
    allowed = ["val_acc", *(f"val_{case}" for case in EVAL_CASES)]
    require(objective in allowed, "objective", objective, f"one of {allowed} (validation only: never test)")
    method.check(cfg)


# Path settings checked for their kind here (a missing one is named by the code that reads it).
FOLDER_SETTINGS = ("paths.cache_dir", "data.cache_dir", "data.root")
FILE_SETTINGS = ("data.train_json", "data.val_json", "data.test_json", "data.label_csv", "data.metadata_csv",
                 "data.manifest", "backbone.checkpoint")


def _check_path_settings(cfg: DictConfig) -> None:
    """A folder setting that is (or lies under) a file, or a file setting that is a folder, is refused by name."""
    for key, folder in [*((k, True) for k in FOLDER_SETTINGS), *((k, False) for k in FILE_SETTINGS)]:
        try:
            value = OmegaConf.select(cfg, key, default=None)
        except Exception:  # noqa: BLE001 - a mandatory value not set: the dataset's own message names it
            continue
        if not isinstance(value, str) or value in ("", "???") or "://" in value:
            continue
        path = Path(value).expanduser()
        if folder:
            existing = next((p for p in (path, *path.parents) if p.exists()), None)
            require(existing is None or existing.is_dir(), key, value,
                    f"a folder ({existing} is a file); point it at a folder, or leave it out for the default")
        else:
            require(not path.is_dir(), key, value, "a file, not a folder")
