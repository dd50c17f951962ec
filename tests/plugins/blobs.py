"""A dataset defined outside uvav, in one module (plus ``conf/data/blobs.yaml``): three classes, each a noisy
constant fbank band and a noisy image colour, generated in code. Registered when imported:
``UVAV_PLUGINS=tests.plugins.blobs``."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from uvav.config import DataConfig
from uvav.data import DATASETS, AVData, Dataset
from uvav.data.base import TensorSplit

CLASS_NAMES = ("low", "middle", "high")


@dataclass
class BlobsConfig(DataConfig):
    name: str = "blobs"
    per_class: int = 24  # samples per class in each of train, val and test
    noise: float = 1.0


def _split(cfg, gen: torch.Generator) -> TensorSplit:
    labels = torch.arange(len(CLASS_NAMES)).repeat_interleave(cfg.per_class)
    n = labels.numel()
    audio = cfg.noise * torch.randn(n, cfg.target_length, cfg.num_mel_bins, generator=gen)
    band = cfg.num_mel_bins // len(CLASS_NAMES)
    for c in range(len(CLASS_NAMES)):
        audio[labels == c, :, c * band:(c + 1) * band] += 2.0
    visual = cfg.noise * torch.randn(n, 3, cfg.image_size, cfg.image_size, generator=gen)
    visual[torch.arange(n), labels] += 2.0  # class c: channel c brighter
    return TensorSplit(audio, visual, labels)


def load_blobs(cfg, cache_dir: str | None = None) -> AVData:
    gen = torch.Generator().manual_seed(cfg.seed)
    train, val, test = (_split(cfg, gen) for _ in range(3))
    return AVData(train, val, test, list(CLASS_NAMES), {"source": "blobs (generated in a test plugin)"})


DATASETS.register(Dataset("blobs", BlobsConfig, load_blobs, class_names=CLASS_NAMES, decoded=False))
