"""The settings a training run reads: the trainer's (:class:`FitSettings`) and where a stage's samples come from
(:class:`Feed`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uvav.config import NoiseConfig
from uvav.data.base import AVSplit
from uvav.data.loading import LoaderOptions


@dataclass(frozen=True)
class FitSettings:
    """The trainer settings a training loop reads (built once from the ``trainer`` config node)."""

    batch_size: int
    eval_batch_size: int
    warmup_epochs: float
    grad_clip: float
    progress: bool

    @classmethod
    def of(cls, trainer: Any) -> FitSettings:
        """From the ``trainer`` node (or anything with these attributes); a FitSettings is returned as is."""
        if isinstance(trainer, cls):
            return trainer
        return cls(int(trainer.batch_size), int(trainer.eval_batch_size), float(trainer.warmup_epochs),
                   float(trainer.grad_clip), bool(trainer.progress))



@dataclass
class Feed:
    """Where a stage's samples come from and how they are batched; where file-backed token caches go."""

    train: AVSplit
    val: AVSplit
    noise: NoiseConfig
    options: LoaderOptions
    augmentation: tuple[int, int, int] = (0, 0, 0)  # (freq_mask, time_mask, image_shift), training only
    missing_rate: float | None = None  # share of training samples given a corrupted case (None: uniform draw)
    token_dir: Path | None = None
    cache_dtype: str = "auto"
    cache_device_gb: float = 16.0
