"""Structured-config schemas (registered in Hydra's ConfigStore) and checks of combinations.

Every group option in ``conf/`` starts from one of these schemas, so an unknown key or a wrong type fails at
composition with Hydra's own message. Checks that span several keys live in :func:`validate`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from uvav.cases import CASES, EVAL_CASES
from uvav.errors import ConfigError, UserError  # noqa: F401  (ConfigError: importable from here too)

PROMPT_KINDS = ("none", "input", "attention", "both")
AUDIO_NOISES = ("gaussian", "time_roll", "freq_mask", "missing")
VISUAL_NOISES = ("black", "gaussian", "blur", "pixelate")

# Settings that cannot change a result, in tiers by purpose (each adds to RUNTIME_KEYS or to the tier it names):
# - RUNTIME_KEYS: how fast or where a job runs and how it reports; no number depends on them. Left out of the key
#   that finds a finished job again (with reuse_finished, which only says whether to look).
# (backbone.checkpoint_sha256 only verifies the file: it can fail a job, never change a number)
RUNTIME_KEYS = ("trainer.progress", "trainer.num_threads", "trainer.checkpoint_every_epoch",
                "data.num_workers", "data.verify_store", "method.cache_device_gb", "backbone.checkpoint_sha256",
                "trainer.preflight", "logger")  # a whole section: where the training curves go
# - DERIVED_KEYS: read only through the interpolations of other keys, so their effect is in those keys' resolved
#   values (``frozen``: the frozen-base methods' ``method.epochs``/``method.lr``; FT jobs ignore it).
DERIVED_KEYS = ("frozen",)
JOB_KEY_NEUTRAL = (*RUNTIME_KEYS, *DERIVED_KEYS, "reuse_finished")
# - MODEL_KEY_NEUTRAL: cannot change a fine-tuned model's weights either (the key of a shared FT model).
MODEL_KEY_NEUTRAL = (*RUNTIME_KEYS, "trainer.eval_batch_size")
# - EVALUATION_NEUTRAL: cannot change what a saved model is evaluated on (left out of an evaluation's name).
EVALUATION_NEUTRAL = (*MODEL_KEY_NEUTRAL, "trainer.device", "paths.cache_dir")
# - GROUPING_NEUTRAL: do not make another experiment (with the seed: the jobs that share a row of the tables).
GROUPING_NEUTRAL = (*EVALUATION_NEUTRAL, *DERIVED_KEYS, "seed", "paths", "reuse_finished", "objective", "data.root",
                    "data.cache_dir")


# Settings added after job and FT-model keys were in use: left out of those keys while at their default, so that
# the jobs and FT models of earlier versions are found again (tests/test_pipeline.py pins the default FT key).
KEYED_OFF_DEFAULT_ONLY = {"data.label_fraction": 1.0, "trainer.head_lr_scale": 1.0, "prompt.depth": 1,
                          "prompt.shared_depth": 0, "scenario.missing_rate": None, "method.base": "finetuned",
                          "data.store_dtype": "float16", "data.eval_frames": "average", "data.multi_label": "auto",
                          "data.labels_per_clip": 1,
                          # CAV-MAE's fine-tuning recipe (uvav/recipe.py): off by default
                          "trainer.optimizer": "adamw", "trainer.betas": [0.9, 0.999], "trainer.lr_schedule": "cosine",
                          "trainer.lr_step_start": 2, "trainer.lr_step_every": 1, "trainer.lr_step_decay": 0.5,
                          "trainer.mixup": 0.0, "trainer.label_smoothing": 0.0, "trainer.wa_start": None,
                          "trainer.wa_end": None,
                          "backbone.allow_partial": False}  # a partial checkpoint import (uvav/models/checkpoints.py)


def key_content(container: dict[str, Any], neutral: tuple[str, ...]) -> dict[str, Any]:
    """What a key hashes: the config without the ``neutral`` keys and without new settings at their default."""
    at_default = tuple(k for k, default in KEYED_OFF_DEFAULT_ONLY.items()
                       if (container.get(k.partition(".")[0]) or {}).get(k.partition(".")[2], default) == default)
    return without_keys(container, (*neutral, *at_default))


def without_keys(container: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """A copy of a nested config dict without the dotted ``keys``."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in container.items()}
    for key in keys:
        section, _, name = key.partition(".")
        if name and isinstance(out.get(section), dict):
            out[section].pop(name, None)
        elif not name:
            out.pop(section, None)
    return out


@dataclass
class DataConfig:
    """Fields every dataset has. ``target_length`` is in fbank frames (10 ms), ``image_size`` in pixels."""

    name: str = MISSING
    target_length: int = 64
    num_mel_bins: int = 128
    image_size: int = 32
    cache_dir: str | None = None  # feature stores; None -> <paths.cache_dir>/features
    val_fraction: float = 0.15
    seed: int = 0  # fixes the dataset itself (generation, pairing, splits); the top-level seed fixes training
    on_bad_file: str = "error"  # error | skip
    # processes that decode files into the feature store and feed batches (DataLoader workers); 0 -> in the
    # main process; None -> every core this process may use (DataLoader: only when training on a GPU)
    num_workers: int | None = None
    verify_store: bool = False  # re-hash every chunk of the feature store on opening (else only changed files)
    store_dtype: str = "float16"  # stored fbank: float16 (half the disk; adds <= ~1e-3, README) | float32 (exact)
    label_fraction: float = 1.0  # keep this share of each class of the training split (seeded by data.seed)
    # training-time augmentation (never on validation/test): SpecAugment-style masks, random image shifts
    freq_mask: int = 0  # zero up to this many mel bins
    time_mask: int = 0  # zero up to this many frames
    image_shift: int = 0  # translate images by up to this many pixels (zero fill)


@dataclass
class BackboneConfig:
    """A CAV-MAE-style transformer. ``depth`` blocks per modality, then fusion, then ``shared_depth``."""

    name: str = MISSING
    # CAV-MAE weights to start from: a path, an http(s):// or file:// URL, or a published name (cavmae_scale++,
    # cavmae_scale+, cavmae_base, cavmae_vggsound_65.5; uvav/models/zoo.py); downloads are cached
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None  # verify the checkpoint file (a mismatch deletes a downloaded copy)
    allow_partial: bool = False  # accept a checkpoint that leaves encoder tensors unfilled (logged at WARNING)
    embed_dim: int = 64
    num_heads: int = 4
    depth: int = 2
    shared_depth: int = 0
    fusion_depth: int = 1  # each fusion layer = one visual->audio and one audio->visual cross-attention
    mlp_ratio: float = 4.0
    patch_size: int = 16
    image_patch_size: int | None = None  # None -> patch_size
    drop_path: float = 0.0


@dataclass
class PromptConfig:
    kind: str = "attention"  # none | input | attention | both
    length: int = 4
    depth: int = 1  # encoder blocks with input-level prompts of their own (1: before the encoders only)
    shared_depth: int = 0  # shared blocks with input-level prompts of their own


@dataclass
class ScenarioConfig:
    name: str = MISSING
    train_cases: list[str] = field(default_factory=lambda: ["complete"])
    # share of training samples given a corrupted case (the rest complete); None: uniform over train_cases
    missing_rate: float | None = None


@dataclass
class MethodConfig:
    """Fields every method has; each method's schema extends it (``uvav/methods/<name>.py``). ``epochs``/``lr``:
    this method's own stage (``ft``: the FT stage; a frozen-base method: its stages, by default ``frozen.*``)."""

    name: str = MISSING
    epochs: int | None = None  # None -> trainer.epochs
    lr: float | None = None  # None -> trainer.lr


@dataclass
class FrozenStageConfig:
    """The schedule of every frozen-base method's stages (its own and the head-only baseline): the default of its
    ``method.epochs``/``method.lr`` (:class:`uvav.methods.FrozenBaseConfig`). FT's schedule is the trainer's."""

    epochs: int = 10
    lr: float = 0.005


@dataclass
class TrainerConfig:
    epochs: int = 8
    batch_size: int = 64
    eval_batch_size: int = 256
    lr: float = 1e-3
    head_lr_scale: float = 1.0  # FT only: the classifier head learns at lr x this (CAV-MAE: 10, docs/facts.md §2)
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    grad_clip: float = 1.0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    deterministic: bool = False
    precision: str = "auto"  # auto (bf16 autocast on CUDA) | fp32 | bf16
    compile: bool = False
    num_threads: int | None = None
    progress: bool = True
    checkpoint_every_epoch: bool = True
    preflight: bool = True  # estimate the training step's memory and refuse a job that cannot fit (uvav/preflight.py)
    # CAV-MAE's fine-tuning recipe, options of the FT stage only (uvav/recipe.py; each off by default)
    optimizer: str = "adamw"  # adamw (decoupled weight decay) | adam (L2 in the gradient, as CAV-MAE)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # Adam's (beta1, beta2)
    lr_schedule: str = "cosine"  # cosine (to zero) | step (x lr_step_decay at epochs start, start+every, ...)
    lr_step_start: int = 2  # step: epochs at the full rate before the first decay (CAV-MAE's lrscheduler_start)
    lr_step_every: int = 1
    lr_step_decay: float = 0.5
    mixup: float = 0.0  # share of training samples mixed with another of the batch (lambda ~ Beta(10, 10))
    label_smoothing: float = 0.0  # targets: positives 1 - eps, every other class eps / K
    wa_start: int | None = None  # average the weights of epochs wa_start..wa_end (1-based, inclusive) ...
    wa_end: int | None = None  # ... as the FT model, instead of the best epoch on validation


@dataclass
class NoiseConfig:
    """Corruptions applied per sample on normalised features (strengths: docs/facts.md §1);
    ``severity`` scales them all."""

    audio: list[str] = field(default_factory=lambda: ["gaussian", "time_roll", "freq_mask"])
    visual: list[str] = field(default_factory=lambda: ["black", "gaussian", "blur", "pixelate"])
    severity: float = 1.0
    audio_gaussian_std: float = 10.0
    both_gaussian_std: float = 1.0  # audio gaussian std when both modalities are noised
    max_time_roll: int = 64
    max_freq_mask: int = 32
    visual_gaussian_std: float = 5.0
    blur_kernel: int = 51  # at 224 px; scaled with the image size
    pixelate_factor: float = 0.05
    eval_seed: int = 1234  # fixes the corruption draws of validation and test sets

    @classmethod
    def of(cls, node: Any) -> NoiseConfig:
        """The settings of a ``noise`` config node (structured or plain) as a plain, picklable object."""
        return cls(**OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node))


@dataclass
class MlflowLoggerConfig:
    """``logger=mlflow`` (:mod:`uvav.loggers.mlflow_logger`)."""

    tracking_uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else sqlite:///<outputs>/mlflow.db
    experiment: str = "uvav"


@dataclass
class WandbLoggerConfig:
    """``logger=wandb`` (:mod:`uvav.loggers.wandb_logger`)."""

    mode: str = "offline"  # offline | online | disabled
    project: str = "uvav"
    entity: str | None = None


@dataclass
class LoggerConfig:
    """Training curves and trackers (:mod:`uvav.loggers`): ``name`` is ``csv`` | ``tensorboard`` | ``mlflow`` |
    ``wandb`` | ``none``, or a list of several (``logger.name=[csv,mlflow]``)."""

    name: Any = "csv"
    log_steps: bool = True  # also a row/point per optimiser step, not only per epoch
    mlflow: MlflowLoggerConfig = field(default_factory=MlflowLoggerConfig)
    wandb: WandbLoggerConfig = field(default_factory=WandbLoggerConfig)


@dataclass
class PathsConfig:
    cache_dir: str = ".cache/uvav"  # fine-tuned models and feature caches shared between jobs


@dataclass
class Config:
    data: DataConfig = MISSING
    backbone: BackboneConfig = MISSING
    prompt: PromptConfig = MISSING
    scenario: ScenarioConfig = MISSING
    method: MethodConfig = MISSING
    trainer: TrainerConfig = MISSING
    frozen: FrozenStageConfig = field(default_factory=FrozenStageConfig)  # the frozen-base stages' schedule
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)  # runs without the section: the default
    seed: int = 0
    objective: str = "val_acc"  # value returned to sweepers: val_acc (selection metric) or val_<case>
    reuse_finished: bool = True  # a job whose exact config already finished returns that result at once


def register_configs() -> None:
    """Register the schemas so that ``conf/<group>/<option>.yaml`` can extend them via their defaults list: the
    common ones, and ``<name>_schema`` of every registered dataset (group ``data``) and method (group ``method``);
    the ``uvav_now`` resolver of run folders and
    the ``uvav_loggers`` resolver of the logger group's choice."""
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


def config_dir() -> str:
    """The ``conf/`` folder: beside the package in a checkout, inside it (``uvav/conf``) when installed."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "conf", here / "conf"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"uvav's conf/ folder was not found beside or inside {here}")


def require(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"Invalid value {value!r} for '{key}': {allowed}")


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
    for key in ("epochs", "batch_size", "eval_batch_size"):
        require(cfg.trainer[key] > 0, f"trainer.{key}", cfg.trainer[key], "a positive integer")
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
