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

CASES = ("complete", "noisy_audio", "noisy_visual", "noise_both")
EVAL_CASES = (*CASES, "mixed")
PROMPT_KINDS = ("none", "input", "attention", "both")
METHODS = ("ft", "pl", "lora", "adapter")
# nn.Linear layers of a transformer block that LoRA can wrap (timm Block: attn.qkv/proj, mlp.fc1/fc2; fusion
# cross-block: attn.q/kv/proj, mlp.fc1/fc2)
LORA_TARGETS = ("attn.qkv", "attn.q", "attn.kv", "attn.proj", "mlp.fc1", "mlp.fc2")
AUDIO_NOISES = ("gaussian", "time_roll", "freq_mask", "missing")
VISUAL_NOISES = ("black", "gaussian", "blur", "pixelate")


# settings that cannot change a job's result (how fast or where it runs, how it reports): left out of the keys
# that find a finished job or a fine-tuned model again, and of the settings that group jobs in the tables
RESULT_NEUTRAL_KEYS = ("trainer.progress", "trainer.num_threads", "trainer.checkpoint_every_epoch",
                       "data.num_workers", "data.verify_store", "method.cache_device_gb")


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


class ConfigError(ValueError):
    """A configuration that composes but cannot run (an impossible combination of values)."""


@dataclass
class DataConfig:
    """Fields every dataset has. ``target_length`` is in fbank frames (10 ms), ``image_size`` in pixels."""

    name: str = MISSING
    target_length: int = 64
    num_mel_bins: int = 128
    image_size: int = 32
    val_fraction: float = 0.15
    seed: int = 0  # fixes the dataset itself (generation, pairing, splits); the top-level seed fixes training
    on_bad_file: str = "error"  # error | skip
    cache_dir: str | None = None  # feature stores; None -> <paths.cache_dir>/features
    # processes that decode files into the feature store and feed batches (DataLoader workers); 0 -> in the
    # main process; None -> every core this process may use (DataLoader: only when training on a GPU)
    num_workers: int | None = None
    verify_store: bool = False  # re-hash every chunk of the feature store on opening (else only changed files)
    # training-time augmentation (never on validation/test): SpecAugment-style masks, random image shifts
    freq_mask: int = 0  # zero up to this many mel bins
    time_mask: int = 0  # zero up to this many frames
    image_shift: int = 0  # translate images by up to this many pixels (zero fill)


@dataclass
class SyntheticDataConfig(DataConfig):
    name: str = "synthetic"
    num_train: int = 2400
    num_val: int = 600
    num_test: int = 1000
    audio_noise: float = 0.6  # std of the background noise in the generated fbank (normalised units)
    visual_noise: float = 0.6
    weak_cue_strength: float = 0.3  # amplitude of the faint band / the tint (see uvav/data/synthetic.py)
    weak_cue_reliability: float = 0.85  # share of samples whose weak cue agrees with the label


@dataclass
class AVMnistDataConfig(DataConfig):
    name: str = "av_mnist"
    freq_mask: int = 24
    time_mask: int = 24
    image_shift: int = 2
    root: str | None = None  # folder holding fsdd/ and mnist/; None -> $UVAV_DATA_ROOT or ../shared/data
    target_length: int = 128
    image_size: int = 32
    test_image_fraction: float = 0.3  # share of the MNIST images reserved for the test pool
    audio_snr_db: float | None = None  # difficulty: mix white noise into every clip at this SNR
    image_energy_removed: float = 0.0  # difficulty: PCA reconstruction removing this share of energy
    manifest: str | None = None  # pairing CSV; None -> <feature cache dir>/av_mnist_manifest_seed<seed>.csv
    normalize: str = "train"  # train (statistics of the training split) | cavmae (-5.081 / 4.4849)
    max_clips_per_split: int | None = None  # tests/debugging: decode only this many train and test clips


@dataclass
class UrbanSound8KAVDataConfig(DataConfig):
    name: str = "urbansound8k_av"
    root: str = MISSING  # folder with Dataset_v3_sound/<class>/*.wav and Dataset_v3_vision/<class>/*.jpg
    target_length: int = 400
    image_size: int = 224
    split: str = "stratified"  # stratified (per class, seeded by seed) | folds (UrbanSound8K's folds)
    test_fraction: float = 0.3  # split=stratified: share of each class held out for test
    metadata_csv: str | None = None  # UrbanSound8K.csv (slice_file_name, fold, classID) for split=folds
    test_folds: list[int] = field(default_factory=lambda: [10])  # split=folds: these folds are the test set
    normalize: str = "train"  # train (statistics of the training split) | cavmae (-5.081 / 4.4849)


@dataclass
class CavmaeJsonDataConfig(DataConfig):
    """CAV-MAE's datafiles: JSON ``{"data": [{"video_id", "wav", "video_path", "labels"}]}`` + a label CSV."""

    name: str = "cavmae_json"
    train_json: str | None = None  # required (checked when the data is loaded)
    val_json: str | None = None  # None -> val_fraction of train_json, stratified by class (seeded by seed)
    test_json: str | None = None  # required
    label_csv: str | None = None  # required; header index,mid,display_name; class order = index
    num_frames: int = 10  # frames extracted per clip: <video_path>/frame_<i>/<video_id>.jpg, i < num_frames
    frame: str = "middle"  # middle (num_frames // 2, CAV-MAE's evaluation frame) | a fixed index 0..num_frames-1
    target_length: int = 1024
    image_size: int = 224
    normalize: str = "cavmae"  # cavmae (-5.081 / 4.4849) | train (statistics of the training split)


@dataclass
class BackboneConfig:
    """A CAV-MAE-style transformer. ``depth`` blocks per modality, then fusion, then ``shared_depth``."""

    name: str = MISSING
    embed_dim: int = 64
    num_heads: int = 4
    depth: int = 2
    shared_depth: int = 0
    fusion_depth: int = 1  # each fusion layer = one visual->audio and one audio->visual cross-attention
    mlp_ratio: float = 4.0
    patch_size: int = 16
    image_patch_size: int | None = None  # None -> patch_size
    drop_path: float = 0.0
    checkpoint: str | None = None  # CAV-MAE state dict to start from (cavmae_base only)


@dataclass
class PromptConfig:
    kind: str = "attention"  # none | input | attention | both
    length: int = 4


@dataclass
class ScenarioConfig:
    name: str = MISSING
    train_cases: list[str] = field(default_factory=lambda: ["complete"])


@dataclass
class MethodConfig:
    """``ft`` trains every weight; ``pl`` freezes the FT model of the same data/backbone/seed and trains prompts;
    ``lora`` / ``adapter`` (baselines) freeze the same FT model and train LoRA updates / bottleneck adapters."""

    name: str = MISSING
    epochs: int | None = None  # None -> trainer.epochs
    lr: float | None = None  # None -> trainer.lr
    train_head: bool = True  # pl: the classifier head is trained with the prompts
    prompt_training: str = "per_scenario"  # pl: per_scenario (paper) | joint (all sets, as used at test time)
    orthogonality: float = 0.0  # pl: weight of a loss keeping the case prompt sets apart (0 = off)
    head_only_baseline: bool = True  # pl: also train the head alone (no prompts) for an honest comparison
    base_scenario: str = "complete"  # pl: training case of the FT model that is frozen
    cache_features: str = "auto"  # pl: reuse frozen encoder outputs across epochs: auto | on | off
    cached_views: int = 4  # pl: corrupted views per sample and case precomputed when caching
    cache_dtype: str = "auto"  # cached encoder outputs: auto (bf16 on CUDA, fp16 on CPU) | bf16 | fp16 | fp32
    cache_device_gb: float = 16.0  # cached encoder outputs stay on the GPU up to this size, else in a file
    lora_rank: int = 4  # lora: rank r of each low-rank update B A
    lora_alpha: float | None = None  # lora: the update is scaled by alpha / r; None -> 2 * lora_rank
    # lora: the nn.Linear layers wrapped in every encoder, fusion and shared block (names in LORA_TARGETS);
    # default: the attention projections (qkv/proj of the blocks, q/kv/proj of the fusion cross-attention)
    lora_targets: list[str] = field(default_factory=lambda: ["attn.qkv", "attn.q", "attn.kv", "attn.proj"])
    adapter_bottleneck: int = 16  # adapter: hidden width of the adapter after every block's MLP


@dataclass
class TrainerConfig:
    epochs: int = 8
    batch_size: int = 64
    eval_batch_size: int = 256
    lr: float = 1e-3
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


@dataclass
class NoiseConfig:
    """Corruptions applied per sample on normalised features (reference.md §1). ``severity`` scales them all."""

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
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    seed: int = 0
    objective: str = "val_acc"  # value returned to sweepers: val_acc (selection metric) or val_<case>
    reuse_finished: bool = True  # a job whose exact config already finished returns that result at once


def register_configs() -> None:
    """Register the schemas so that ``conf/<group>/<option>.yaml`` can extend them via their defaults list."""
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    cs.store(group="data", name="synthetic_schema", node=SyntheticDataConfig)
    cs.store(group="data", name="av_mnist_schema", node=AVMnistDataConfig)
    cs.store(group="data", name="urbansound8k_av_schema", node=UrbanSound8KAVDataConfig)
    cs.store(group="data", name="cavmae_json_schema", node=CavmaeJsonDataConfig)
    cs.store(group="backbone", name="backbone_schema", node=BackboneConfig)
    cs.store(group="prompt", name="prompt_schema", node=PromptConfig)
    cs.store(group="scenario", name="scenario_schema", node=ScenarioConfig)
    cs.store(group="method", name="method_schema", node=MethodConfig)
    cs.store(group="trainer", name="trainer_schema", node=TrainerConfig)


def config_dir() -> str:
    """The ``conf/`` folder: beside the package in a checkout, inside it (``uvav/conf``) when installed."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "conf", here / "conf"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"uvav's conf/ folder was not found beside or inside {here}")


def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
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
        _require(key in known, where, node[key], f"not a known key; allowed: {sorted(known)}")
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            _check_known_keys(child, where)


def validate(cfg: DictConfig) -> None:
    """Reject combinations that compose but cannot run. Raises :class:`ConfigError` naming key and allowed values."""
    _check_known_keys(cfg, "")
    _require(cfg.method.name in METHODS, "method.name", cfg.method.name, f"one of {list(METHODS)}")
    _require(cfg.prompt.kind in PROMPT_KINDS, "prompt.kind", cfg.prompt.kind, f"one of {list(PROMPT_KINDS)}")
    _require(cfg.prompt.length > 0, "prompt.length", cfg.prompt.length, "a positive integer")
    if cfg.method.name == "pl":
        _require(cfg.prompt.kind != "none", "prompt", cfg.prompt.kind,
                 "method=pl needs prompts: prompt=input, attention or both (its head-only baseline is "
                 "method.head_only_baseline=true)")
    for case in cfg.scenario.train_cases:
        _require(case in CASES, "scenario.train_cases", case, f"each one of {list(CASES)}")
    _require(len(cfg.scenario.train_cases) > 0, "scenario.train_cases", [], "at least one case")
    _require(cfg.method.base_scenario in CASES, "method.base_scenario", cfg.method.base_scenario,
             f"one of {list(CASES)}")
    _require(cfg.method.prompt_training in ("per_scenario", "joint"), "method.prompt_training",
             cfg.method.prompt_training, "per_scenario or joint")
    _require(cfg.method.cache_features in ("auto", "on", "off"), "method.cache_features",
             cfg.method.cache_features, "auto, on or off")
    if cfg.method.cache_features == "on":
        _require(cfg.prompt.kind == "attention", "method.cache_features", "on",
                 "'on' only with prompt=attention (input prompts change the encoders' outputs); use auto")
    _require(cfg.method.cached_views >= 1, "method.cached_views", cfg.method.cached_views, "an integer >= 1")
    _require(cfg.method.cache_dtype in ("auto", "bf16", "fp16", "fp32"), "method.cache_dtype",
             cfg.method.cache_dtype, "auto, bf16, fp16 or fp32")
    _require(cfg.method.cache_device_gb >= 0, "method.cache_device_gb", cfg.method.cache_device_gb, ">= 0")
    _require(cfg.data.num_workers is None or cfg.data.num_workers >= 0, "data.num_workers", cfg.data.num_workers,
             ">= 0 (0: in the main process), or null for every core")
    _require(cfg.method.lora_rank > 0, "method.lora_rank", cfg.method.lora_rank, "a positive integer")
    _require(cfg.method.lora_alpha is None or cfg.method.lora_alpha > 0, "method.lora_alpha", cfg.method.lora_alpha,
             "> 0, or null for 2 * method.lora_rank")
    _require(len(cfg.method.lora_targets) > 0, "method.lora_targets", [], f"at least one of {list(LORA_TARGETS)}")
    for target in cfg.method.lora_targets:
        _require(target in LORA_TARGETS, "method.lora_targets", target, f"each one of {list(LORA_TARGETS)}")
    _require(cfg.method.adapter_bottleneck > 0, "method.adapter_bottleneck", cfg.method.adapter_bottleneck,
             "a positive integer")
    patch_a = cfg.backbone.patch_size
    patch_v = cfg.backbone.image_patch_size or patch_a
    _require(cfg.data.target_length >= patch_a, "data.target_length", cfg.data.target_length,
             f"at least one patch: >= backbone.patch_size ({patch_a})")
    _require(cfg.data.num_mel_bins >= patch_a, "data.num_mel_bins", cfg.data.num_mel_bins,
             f">= backbone.patch_size ({patch_a})")
    _require(cfg.data.image_size >= patch_v, "data.image_size", cfg.data.image_size,
             f">= the image patch size ({patch_v})")
    _require(cfg.backbone.embed_dim % cfg.backbone.num_heads == 0, "backbone.embed_dim",
             cfg.backbone.embed_dim, f"a multiple of backbone.num_heads ({cfg.backbone.num_heads})")
    _require(0.0 < cfg.data.val_fraction < 1.0, "data.val_fraction", cfg.data.val_fraction, "in (0, 1)")
    _require(cfg.data.on_bad_file in ("error", "skip"), "data.on_bad_file", cfg.data.on_bad_file,
             "error or skip")
    for kind in cfg.noise.audio:
        _require(kind in AUDIO_NOISES, "noise.audio", kind, f"each one of {list(AUDIO_NOISES)}")
    for kind in cfg.noise.visual:
        _require(kind in VISUAL_NOISES, "noise.visual", kind, f"each one of {list(VISUAL_NOISES)}")
    _require(cfg.noise.severity >= 0, "noise.severity", cfg.noise.severity, ">= 0")
    for key in ("epochs", "batch_size", "eval_batch_size"):
        _require(cfg.trainer[key] > 0, f"trainer.{key}", cfg.trainer[key], "a positive integer")
    _require(cfg.trainer.lr > 0, "trainer.lr", cfg.trainer.lr, "> 0")
    _require(cfg.trainer.precision in ("auto", "fp32", "bf16"), "trainer.precision", cfg.trainer.precision,
             "auto, fp32 or bf16")
    device = cfg.trainer.device
    _require(device in ("auto", "cpu", "cuda") or device.startswith("cuda:"), "trainer.device", device,
             "auto, cpu, cuda or cuda:N")
    objective = cfg.objective
    allowed = ["val_acc", *(f"val_{case}" for case in EVAL_CASES)]
    _require(objective in allowed, "objective", objective, f"one of {allowed} (validation only: never test)")
