"""The types every dataset loader returns: splits read sample by sample, and split helpers.

A split is an indexable set of ``(audio, visual)`` samples with its labels in memory. Loaders return either
:class:`TensorSplit` (small data generated in code: the synthetic set) or a split backed by an on-disk
feature store (:class:`uvav.data.store.StoreSplit`), which reads one sample at a time and normalises it on the
fly, so that memory does not grow with the dataset. Training and evaluation read every split through
:mod:`uvav.data.loading` (``torch.utils.data.DataLoader``), never as whole tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


class AVSplit:
    """One split: ``labels`` in memory (long ``[N]`` class indices, or float32 ``[N, K]`` multi-hot for
    multi-label data) and :meth:`sample` giving normalised float32 features, fbank ``[T, F]`` and image
    ``[3, H, W]`` (``[V, 3, H, W]``: every stored frame of a clip, when a split evaluates by averaging over
    frames). Subclasses must pickle cheaply (DataLoader workers get a copy)."""

    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def sample(self, i: int, gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample ``i``; ``gen`` (a training sample's generator) draws the frame where a clip has several."""
        raise NotImplementedError

    def subset(self, index: torch.Tensor) -> AVSplit:
        """The samples at positions ``index`` (a view: nothing is copied but the labels)."""
        raise NotImplementedError

    def with_audio_normalization(self, mean: float, std: float) -> AVSplit:
        """The same samples with the fbank normalised by ``(x - mean) / std`` instead of the split's own
        statistics (evaluating a run on data whose training split had other statistics)."""
        raise NotImplementedError(f"{type(self).__name__} holds features that are normalised already")


class MissingTable(AVSplit):
    """``split`` under a per-sample missing table (Missing-Aware Prompts' test-time protocol): with ``u_i`` drawn
    uniformly from ``seed`` alone, sample ``i`` loses its audio when ``u_i < audio_rate`` and its image when
    ``audio_rate <= u_i < audio_rate + visual_rate``; a lost modality is zeros after normalisation, as under the
    ``missing`` and ``black`` corruptions. The table is a function of the seed and the split's length only: every
    method evaluated on the split sees the same samples missing, and a higher rate's missing samples include a lower
    one's."""

    def __init__(self, split: AVSplit, audio_rate: float, visual_rate: float, seed: int) -> None:
        problem = self.rates_problem(audio_rate, visual_rate)
        if problem:
            raise ValueError(f"missing rates audio {audio_rate}, visual {visual_rate}: {problem}")
        self.split, self.audio_rate, self.visual_rate, self.seed = split, audio_rate, visual_rate, seed
        self.labels = split.labels
        u = torch.rand(len(split), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        self.no_audio = u < audio_rate
        self.no_image = (u >= audio_rate) & (u < audio_rate + visual_rate)

    @staticmethod
    def rates_problem(audio_rate: float, visual_rate: float) -> str | None:
        """What is wrong with the two rates (None: nothing)."""
        if 0.0 <= audio_rate <= 1.0 and 0.0 <= visual_rate <= 1.0 and audio_rate + visual_rate <= 1.0:
            return None
        return "each in [0, 1], their sum at most 1 (a sample loses one modality)"

    def sample(self, i: int, gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        audio, visual = self.split.sample(i, gen)
        if self.no_audio[i]:
            audio = torch.zeros_like(audio)
        if self.no_image[i]:
            visual = torch.zeros_like(visual)
        return audio, visual

    def subset(self, index: torch.Tensor) -> AVSplit:
        raise NotImplementedError("a missing table is drawn over a whole split: subset the split first")

    def with_audio_normalization(self, mean: float, std: float) -> MissingTable:
        return MissingTable(self.split.with_audio_normalization(mean, std), self.audio_rate, self.visual_rate,
                            self.seed)


class TensorSplit(AVSplit):
    """A split held in memory as normalised tensors: ``audio [N, T, F]``, ``visual [N, 3, H, W]``."""

    def __init__(self, audio: torch.Tensor, visual: torch.Tensor, labels: torch.Tensor) -> None:
        n = labels.shape[0]
        if audio.shape[0] != n or visual.shape[0] != n:
            raise ValueError(f"split sizes differ: audio {audio.shape[0]}, visual {visual.shape[0]}, labels {n}")
        self.audio, self.visual, self.labels = audio, visual, as_labels(labels)

    def sample(self, i: int, gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.audio[i], self.visual[i]

    def subset(self, index: torch.Tensor) -> TensorSplit:
        return TensorSplit(self.audio[index], self.visual[index], self.labels[index])


@dataclass
class AVData:
    """Train / validation / test splits plus what a run must record about them.

    ``info`` holds JSON-serialisable facts: source, how the split was made, normalisation statistics,
    files skipped as bad, the feature settings, the feature store. It is written into every run's
    ``metrics.json``.
    """

    train: AVSplit
    val: AVSplit
    test: AVSplit
    class_names: list[str]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def multi_label(self) -> bool:
        """True when a sample may have several classes (multi-hot ``float [N, K]`` labels): such data trains with
        a sigmoid / BCE objective and is scored in mAP instead of accuracy."""
        return self.train.labels.dim() == 2

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}

    def with_label_fraction(self, fraction: float, seed: int) -> AVData:
        """Only ``fraction`` of each class of the training split keeps its pairs (labelled); validation and test
        are unchanged. The subset depends on ``seed`` alone (the dataset's), not on the training seed. Multi-label
        data: a seeded random ``fraction`` of the samples (see :func:`stratified_split`)."""
        _, kept = stratified_split(self.train.labels, fraction, seed + 7919)  # not the validation split's draw
        info = {**self.info, "label_fraction": {"fraction": fraction, "train_before": len(self.train),
                                                 "train": int(kept.numel()), "seed": seed}}
        return AVData(self.train.subset(kept), self.val, self.test, self.class_names, info)


def as_labels(labels: torch.Tensor) -> torch.Tensor:
    """A split's labels as stored: 1-D class indices as long, 2-D multi-hot rows as float32 (never coerced)."""
    return labels.float() if labels.dim() == 2 else labels.long()


def stratified_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices per class: about ``fraction`` of each class goes to the second part (at least one).

    Multi-hot labels ``[N, K]`` have no one class per sample to stratify by: a seeded random ``fraction`` of the
    samples (at least one) goes to the second part."""
    gen = torch.Generator().manual_seed(seed)
    if labels.dim() == 2:
        order = torch.randperm(labels.shape[0], generator=gen)
        n_held = max(1, int(round(fraction * labels.shape[0]))) if labels.shape[0] > 1 else 0
        return torch.sort(order[n_held:]).values, torch.sort(order[:n_held]).values
    keep, held = [], []
    for cls in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == cls).flatten()
        idx = idx[torch.randperm(idx.numel(), generator=gen)]
        n_held = max(1, int(round(fraction * idx.numel()))) if idx.numel() > 1 else 0
        held.append(idx[:n_held])
        keep.append(idx[n_held:])
    return torch.sort(torch.cat(keep)).values, torch.sort(torch.cat(held)).values
