"""The paired audio-visual dataset type every loader returns, and split helpers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class AVSplit:
    """One split held in memory: normalised fbank ``audio [N, T, F]``, ``visual [N, 3, H, W]``, ``labels [N]``."""

    audio: torch.Tensor
    visual: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        n = self.labels.shape[0]
        if self.audio.shape[0] != n or self.visual.shape[0] != n:
            raise ValueError(
                f"split sizes differ: audio {self.audio.shape[0]}, visual {self.visual.shape[0]}, labels {n}"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index: torch.Tensor) -> AVSplit:
        return AVSplit(self.audio[index], self.visual[index], self.labels[index])


@dataclass
class AVData:
    """Train / validation / test splits plus what a run must record about them.

    ``info`` holds JSON-serialisable facts: source, how the split was made, normalisation statistics,
    files skipped as bad, the feature settings. It is written into every run's ``metrics.json``.
    """

    train: AVSplit
    val: AVSplit
    test: AVSplit
    class_names: list[str]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def stratified_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices per class: about ``fraction`` of each class goes to the second part (at least one)."""
    gen = torch.Generator().manual_seed(seed)
    keep, held = [], []
    for cls in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == cls).flatten()
        idx = idx[torch.randperm(idx.numel(), generator=gen)]
        n_held = max(1, int(round(fraction * idx.numel()))) if idx.numel() > 1 else 0
        held.append(idx[:n_held])
        keep.append(idx[n_held:])
    return torch.sort(torch.cat(keep)).values, torch.sort(torch.cat(held)).values
