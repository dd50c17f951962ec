"""Structured-config schemas and the facts about settings that keys are made of.

Every group option in ``conf/`` starts from one of these schemas (registered in Hydra's ConfigStore by
:func:`uvav.checks.register_configs`), so an unknown key or a wrong type fails at composition with Hydra's own
message. Checks that span several keys live in :func:`uvav.checks.validate`. This module imports no registry: it
is the bottom layer that methods, datasets and models build on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

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
                "trainer.preflight", "paths.encodings_gb", "logger")  # a whole section: where the training curves go
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
                          "data.labels_per_clip": 1, "data.visual_corruption": None, "data.audio_corruption": None,
                          "data.corruption_severity": 3,
                          # CAV-MAE's fine-tuning recipe (uvav/recipe.py): off by default
                          "trainer.optimizer": "adamw", "trainer.betas": [0.9, 0.999], "trainer.lr_schedule": "cosine",
                          "trainer.lr_step_start": 2, "trainer.lr_step_every": 1, "trainer.lr_step_decay": 0.5,
                          "trainer.mixup": 0.0, "trainer.label_smoothing": 0.0, "trainer.wa_start": None,
                          "trainer.wa_end": None,
                          "backbone.allow_partial": False}  # a partial checkpoint import (uvav/models/checkpoints.py)


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config dict as ``{"a.b.c": value}``, lists as JSON text."""
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: json.dumps(obj) if isinstance(obj, list) else obj}


def grouping_neutral(key: str) -> bool:
    """Whether the dotted setting ``key`` is :data:`GROUPING_NEUTRAL` (or Hydra's own)."""
    return key == "hydra" or key.startswith("hydra.") or any(
        key == n or key.startswith(f"{n}.") for n in GROUPING_NEUTRAL)


# Settings added after the committed tables' group ids were made: left out of a group's settings while at their
# default (as KEYED_OFF_DEFAULT_ONLY does for job keys), so that tables regenerated later keep their group ids
GROUPED_OFF_DEFAULT_ONLY = ("data.visual_corruption", "data.audio_corruption", "data.corruption_severity")


def grouping_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The flattened settings of a resolved config that put a job in its group (the tables' rows, the trackers'
    group tag): everything but the :data:`GROUPING_NEUTRAL` settings and :data:`GROUPED_OFF_DEFAULT_ONLY` ones at
    their default."""
    return {k: v for k, v in flatten(config).items() if not grouping_neutral(k)
            and not (k in GROUPED_OFF_DEFAULT_ONLY and v == KEYED_OFF_DEFAULT_ONLY[k])}


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
    # robustness suites (uvav/data/corrupting.py): a registered corruption (uvav/corruptions) of every validation
    # and test clip's waveform or frames, before features, at corruption_severity (1-5); training clips stay clean
    visual_corruption: str | None = None
    audio_corruption: str | None = None
    corruption_severity: int = 3


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
    encodings_gb: float = 20.0  # disk kept for frozen-base encoder outputs shared between jobs (0: none kept)


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
