"""Pre-flight check: does a job's training step fit the device's memory? Estimated from the config alone.

The estimate is the peak of bytes held by live tensors in one training step (what ``uvav.resources`` measures:
``torch.cuda.max_memory_allocated`` on CUDA, :class:`uvav.resources.LiveTensorBytes` on CPU), for the job's
largest stage (the FT stage, and the frozen-base method's own stage), or its evaluation batch if larger:

- parameters (all, fp32; a bf16 copy under autocast), and of the trainable ones gradients and two Adam(W) moments;
- activations saved for backward: per transformer block with a gradient through it, per token and dimension
  (B x N x D, N its tokens with prompt tokens), the residual stream's norm inputs (fp32) and, by whether its
  weights train, the saved inputs of its projections, SDPA's q, k, v and output, and the MLP's hidden (2r or r);
  a part that runs without autograd (frozen encoders under attention-level prompts) holds only its output tokens;
  plus one block's transient work; the batch (none on cached encoder outputs);
- the evaluation batch (``trainer.eval_batch_size``) without autograd, beside the weights, the last gradients and
  the optimiser state: its inputs, tokens and one block's work.

Calibrated against measured peaks (README, "Pre-flight check"). Methods that train no classifier (``pretrain``)
are not checked.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from uvav.config import ConfigError
from uvav.methods import FT, METHODS, cache_views

if TYPE_CHECKING:
    import torch


log = logging.getLogger(__name__)

GIB = 2**30
# Per transformer block, tensors saved for backward in units of B x N x D (r: the MLP ratio):
RESIDUAL_SAVED = 2  # the two norms' inputs, the residual stream: fp32 even under bf16 autocast
# trainable weights: the qkv projection's input, SDPA's q, k, v and output (the output projection reads it as a
# view), fc1's input; the MLP adds 2r (fc1's output for GELU, GELU's output for fc2)
TRAINABLE_SAVED = 6
# frozen weights with a gradient passing through (prompts): a frozen linear layer saves nothing, so SDPA's 4 and
# GELU's input (r)
FROZEN_SAVED = 4
TRANSIENT = 2  # alive at once in one block besides saved tensors: the gradients of its input and output (+ r: the
# MLP hidden's)
EMBED_SAVED = 3  # patch embedding, + position, + modality (per encoder token)
# trainer.eval_batch_size=0 (as large as memory allows): at most this many rows on a GPU; on CPU this many, where
# an encoder's time per row was flat from batches of 16 up (2 cores, cavmae_tiny at 1024 frames and 224 px) and a
# larger batch only holds more memory
MAX_EVAL_BATCH, CPU_EVAL_BATCH = 4096, 256
# how many prompt tokens a prompted stage may add per place, as a multiple of the smaller modality's patch tokens
PROMPT_LENGTH_FACTOR = 4


@dataclass(frozen=True)
class Tokens:
    """Each modality's patch tokens in one sample."""

    audio: int
    visual: int

    @classmethod
    def of(cls, cfg: DictConfig) -> Tokens:
        from uvav.models.grids import audio_grid, image_grid

        patch_a = cfg.backbone.patch_size
        fa, ta = audio_grid(cfg.data.num_mel_bins, cfg.data.target_length, patch_a)
        gv = image_grid(cfg.data.image_size, cfg.backbone.image_patch_size or patch_a)
        return cls(fa * ta, gv[0] * gv[1])


def max_prompt_length(cfg: DictConfig) -> int:
    """The largest ``prompt.length`` validation allows: ``PROMPT_LENGTH_FACTOR`` x the smaller modality's patch
    tokens (a prompt set longer than that outweighs the tokens it is meant to steer and only costs memory)."""
    tokens = Tokens.of(cfg)
    return PROMPT_LENGTH_FACTOR * min(tokens.audio, tokens.visual)


@dataclass
class Estimate:
    """Peak bytes of one stage's training step, by part."""

    stage: str
    weights: int
    trainable_state: int  # gradients, Adam moments, optimiser temporaries
    activations: int
    batch: int
    evaluation: int  # the evaluation batch's peak (weights, gradients and optimiser state included)

    @property
    def train(self) -> int:
        """The training step's peak (what ``uvav.resources`` measures)."""
        return self.weights + self.trainable_state + self.activations + self.batch

    @property
    def total(self) -> int:
        return max(self.train, self.evaluation)

    def describe(self) -> str:
        return (f"{self.stage} stage ~{self.total / GIB:.2f} GiB (weights {self.weights / GIB:.2f}, "
                f"gradients and optimiser {self.trainable_state / GIB:.2f}, activations {self.activations / GIB:.2f}, "
                f"evaluation batch {self.evaluation / GIB:.2f})")


def _parameter_counts(cfg: DictConfig) -> tuple[int, int, int, int]:
    """(model parameters, head parameters, encoder parameters, prompt-bank parameters), from modules built on
    the meta device (no memory, no initialisation cost)."""
    import torch

    from uvav.models.classifier import AVClassifier

    method = METHODS.get(cfg.method.name)
    with torch.device("meta"):
        model = AVClassifier.from_config(cfg.backbone, cfg.data, num_classes=int(cfg.data.get("num_classes") or 10))
        bank = method.bank(cfg) if method.uses_prompts else None
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    return (count(model), count(model.head), count(model.audio) + count(model.visual),
            count(bank) if bank is not None else 0)


def _prompt_tokens(cfg: DictConfig, mode_all_sets: bool) -> int:
    """Prompt tokens one place adds for one sample: one set (oracle, or cpl's mixture of its pool), or every set
    (PL's uncertain selection, when it trains as used)."""
    if not METHODS.get(cfg.method.name).uses_prompts or cfg.prompt.kind == "none":
        return 0
    return cfg.prompt.length * (len(cfg.scenario.train_cases) if mode_all_sets else 1)


def estimate(cfg: DictConfig, device: torch.device, eval_batch: int | None = None) -> list[Estimate]:
    """The estimates of the stages this job may train (FT, unless ``method.base=pretrained``; and a frozen-base
    method's own stage), with evaluation batches of ``eval_batch`` rows (default ``trainer.eval_batch_size``). Empty
    for methods that train no classifier."""
    method = METHODS.get(cfg.method.name)
    if not method.classifies:
        return []
    bf16 = cfg.trainer.precision == "bf16" or (cfg.trainer.precision == "auto" and device.type == "cuda")
    act = 2 if bf16 else 4  # bytes of an activation element (matmul outputs under autocast)
    backbone, data = cfg.backbone, cfg.data
    d, r = backbone.embed_dim, backbone.mlp_ratio
    tokens = Tokens.of(cfg)
    both = tokens.audio + tokens.visual
    params, head, encoders, bank = _parameter_counts(cfg)
    weights = 4 * params + (2 * params if bf16 else 0)  # autocast keeps a bf16 copy of the weights it uses
    batch_elems = data.target_length * data.num_mel_bins + 3 * data.image_size**2
    transient = act * (TRANSIENT + r)

    def block(trains: bool) -> float:
        """Bytes saved per token and dimension by one block with a gradient through it."""
        return 4 * RESIDUAL_SAVED + act * ((TRAINABLE_SAVED + 2 * r) if trains else (FROZEN_SAVED + r))

    def stage(name: str, trainable: int, prompt: int, input_prompts: bool, weights_train: bool,
              encoders_grad: bool, cached: bool) -> Estimate:
        na, nv = tokens.audio + (prompt if input_prompts else 0), tokens.visual + (prompt if input_prompts else 0)
        if encoders_grad:  # every encoder block's saved tensors, and the embeddings'
            encoder = block(weights_train) * backbone.depth * (na + nv) + act * EMBED_SAVED * (na + nv)
        else:  # cached encoder outputs, or encoders without autograd (their work is transient, before the fusion's)
            encoder = act * both
        attention_prompt = prompt if cfg.prompt.kind in ("attention", "both") else 0
        # per direction: a block over the queries (its q, k, v, out counted per query token); trainable weights
        # also save the context's norm input and projection input; prompt keys and values lengthen k and v
        context = (4 + act) * both if weights_train else 0
        fusion = backbone.fusion_depth * (block(weights_train) * both + context + act * 2 * 2 * attention_prompt)
        shared = backbone.shared_depth * block(weights_train) * both
        b, b_eval = cfg.trainer.batch_size, cfg.trainer.eval_batch_size if eval_batch is None else eval_batch
        activations = b * d * (encoder + fusion + shared + transient * max(na, nv, both))
        evaluation = b_eval * (4 * batch_elems + d * (act * both + transient * max(na, nv)))
        held = weights + 4 * bank + 3 * 4 * trainable  # validation runs with the last gradients and Adam's moments
        return Estimate(name, int(weights + 4 * bank), int(4 * 4 * trainable), int(activations),
                        0 if cached else int(4 * b * batch_elems), int(held + evaluation))

    stages = []
    if not (method.frozen_base and cfg.method.get("base") == "pretrained"):
        stages.append(stage(FT, params, 0, False, True, True, False))
    if method.frozen_base:
        joint = cfg.method.get("prompt_training") == "joint"
        prompt = _prompt_tokens(cfg, joint)
        input_prompts = cfg.prompt.kind in ("input", "both") and method.uses_prompts
        peft = not method.uses_prompts  # LoRA / adapters train weights inside the encoders
        trainable = bank + head + (encoders // 10 if peft else 0)  # PEFT: a tenth of the encoders bounds theirs
        cached = cache_views(cfg) > 0 and method.shares_encodings(cfg)  # the method's rule
        stages.append(stage(method.name, trainable, prompt, input_prompts, peft, input_prompts or peft, cached))
    return stages


def eval_batch_size(cfg: DictConfig, device: torch.device, available: int | None = None) -> int:
    """The evaluation batch: ``trainer.eval_batch_size``, or for 0 (as large as memory allows) on CUDA the largest
    power of two up to :data:`MAX_EVAL_BATCH` whose estimated evaluation peak fits in half of ``available`` bytes
    (default: the free device memory; the other half is room for cached encoder outputs and the allocator), and on
    CPU :data:`CPU_EVAL_BATCH`."""
    if cfg.trainer.eval_batch_size > 0:
        return int(cfg.trainer.eval_batch_size)
    fixed = estimate(cfg, device, eval_batch=0) if device.type == "cuda" else []
    if not fixed:  # CPU, or a method that trains no classifier
        return CPU_EVAL_BATCH
    one_row = estimate(cfg, device, eval_batch=1)
    free = available_bytes(device) if available is None else available
    held = max(e.evaluation for e in fixed)
    per_row = max(o.evaluation - f.evaluation for f, o in zip(fixed, one_row, strict=True))
    size = MAX_EVAL_BATCH
    while size > 1 and held + size * per_row > free / 2:
        size //= 2
    return size


def available_bytes(device: torch.device) -> int:
    """Free memory for tensors: CUDA's free device memory; on CPU ``MemAvailable`` from /proc/meminfo, or the
    cgroup's remaining allowance (``memory.max - memory.current``) when that is smaller."""
    import torch

    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    free = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
    except OSError:
        pass
    cgroup = Path("/sys/fs/cgroup")
    try:
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            left = int(limit) - int((cgroup / "memory.current").read_text())
            free = left if free is None else min(free, left)
    except (OSError, ValueError):
        pass
    return free if free is not None else (os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def check(cfg: DictConfig, device: torch.device, available: int | None = None) -> list[Estimate]:
    """Log the estimate at INFO and raise :class:`ConfigError` when the largest stage cannot fit ``available``
    bytes (default: :func:`available_bytes` of ``device``). ``trainer.preflight=false`` skips the check."""
    if not cfg.trainer.get("preflight", True):
        return []
    estimates = estimate(cfg, device)
    if not estimates:
        return []
    largest = max(estimates, key=lambda e: e.total)
    free = available_bytes(device) if available is None else available
    log.info("pre-flight memory estimate: %s; %.2f GiB available on %s",
             "; ".join(e.describe() for e in estimates), free / GIB, device)
    if largest.total > free:
        settings = [f"trainer.batch_size ({cfg.trainer.batch_size})",
                    f"trainer.eval_batch_size ({cfg.trainer.eval_batch_size})",
                    f"data.target_length ({cfg.data.target_length})", f"data.image_size ({cfg.data.image_size})"]
        if _prompt_tokens(cfg, False):
            settings.append(f"prompt.length ({cfg.prompt.length})")
        raise ConfigError(
            f"pre-flight: {largest.describe()} but {free / GIB:.2f} GiB is available on {device}; lower "
            f"{', '.join(settings[:-1])} or {settings[-1]}, or skip this check with trainer.preflight=false")
    return estimates
