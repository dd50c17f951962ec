"""Batches for training and evaluation: ``torch.utils.data.DataLoader`` over a split, corrupted per sample.

The one data path of uvav: jobs (``uvav.run``), ``uvav.evaluate``, ``uvav.predict``'s evaluation, robustness
curves and the resource benchmark all read samples through these datasets. A split yields one normalised
sample at a time (from the on-disk feature store, or from memory for the synthetic set); augmentation and
corruption are applied per sample in the loader's worker processes, with draws that depend only on the
sample (:func:`uvav.scenarios.sample_generator`), so nothing is precomputed for a whole split and the result
does not depend on the batch order or the number of workers.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset

from uvav import distributed
from uvav.config import NoiseConfig
from uvav.data.base import AVSplit
from uvav.errors import ConfigError
from uvav.scenarios import augment_sample, corrupt_sample, draw_training_case, eval_sample, sample_generator


def available_cores() -> int:
    """Cores this process may run on (its affinity mask, e.g. a Slurm allocation), else ``os.cpu_count``."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def cores_per_rank() -> int:
    """This process's share of the available cores: the ranks of a distributed job on one machine split them."""
    return max(1, available_cores() // distributed.local_world_size())


def resolve_workers(num_workers: int | None) -> int:
    """``data.num_workers`` for decoding: None -> every available core; otherwise the number given."""
    if num_workers is None:
        return available_cores()
    if num_workers < 0:
        raise ConfigError(f"data.num_workers={num_workers}: >= 0, or null for every core")
    return int(num_workers)


def loader_workers(num_workers: int | None, device: torch.device) -> int:
    """DataLoader workers: the number given, else this rank's share of the cores (every core in one process) when
    a GPU computes, and none when the CPU does. A CPU job's math already uses every core, and workers beside it
    made epochs 2-15x slower on 2 cores (threads spinning at their barriers while the workers ran)."""
    if num_workers is not None:
        return resolve_workers(num_workers)
    return cores_per_rank() if device.type == "cuda" else 0


@dataclass(frozen=True)
class LoaderOptions:
    """How batches are formed and moved: worker processes, and pinned memory when the device is a GPU."""

    workers: int = 0
    pin_memory: bool = False
    prefetch_factor: int = 4

    @classmethod
    def for_device(cls, num_workers: int | None, device: torch.device) -> LoaderOptions:
        return cls(loader_workers(num_workers, device), device.type == "cuda")

    def loader(self, dataset: Dataset, batch_size: int, order: Sequence[int] | None = None) -> DataLoader:
        """Batches of ``dataset`` in ``order`` (default: index order); fewer workers than batches are not started."""
        count = -(-len(order if order is not None else dataset) // batch_size)
        return self._loader(dataset, count, batch_size=batch_size, sampler=order)

    def batch_loader(self, dataset: Dataset, batches: Sequence[Sequence[int]]) -> DataLoader:
        """The given ``batches`` of ``dataset`` (lists of indices: a rank's parts of the global batches)."""
        return self._loader(dataset, len(batches), batch_sampler=batches)

    def _loader(self, dataset: Dataset, count: int, **batching) -> DataLoader:
        workers = min(self.workers, count)
        return DataLoader(dataset, num_workers=workers, pin_memory=self.pin_memory,
                          prefetch_factor=self.prefetch_factor if workers else None, persistent_workers=False,
                          **batching)


class TrainSet(Dataset):
    """Training samples of one epoch: sample ``i`` gets a case drawn from ``cases`` (at ``missing_rate``, see
    :func:`uvav.scenarios.draw_training_case`), then augmentation and corruption, with draws from a generator
    seeded by ``(seed, epoch, i)``. Items: ``(audio, visual, label, case_id)``. ``stream`` names the use
    (``train``; ``view`` for cached views) so that uses never share draws."""

    def __init__(self, split: AVSplit, noise: NoiseConfig, cases: Sequence[str], seed: int, epoch: int = 0,
                 augmentation: tuple[int, int, int] = (0, 0, 0), stream: str = "train",
                 missing_rate: float | None = None) -> None:
        self.split, self.noise, self.seed, self.epoch, self.stream = split, noise, seed, epoch, stream
        self.cases = tuple(cases)
        self.augmentation = augmentation
        self.missing_rate = missing_rate

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        gen = sample_generator(self.stream, self.seed, self.epoch, i)
        case_id = draw_training_case(self.cases, self.missing_rate, gen)
        audio, visual = self.split.sample(i, gen)  # a clip with several stored frames: a random one
        audio, visual = augment_sample(audio, visual, *self.augmentation, gen)
        audio, visual = corrupt_sample(audio, visual, case_id, self.noise, gen)
        return audio, visual, self.split.labels[i], case_id


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The shuffled sample order of one training epoch (a function of the seed and the epoch only)."""
    return torch.randperm(n, generator=sample_generator("order", seed, epoch)).tolist()


class EvalSet(Dataset):
    """Every sample of a split under each of ``cases``: item ``k`` is sample ``k // C`` under case
    ``cases[k % C]`` (``C`` cases), corrupted as :func:`uvav.scenarios.eval_sample` fixes it. Items: ``(audio,
    visual, label, case_id, case_position)``, where ``case_position`` indexes ``cases`` (``mixed`` included). A
    sample's cases are consecutive items and the last sample read is kept, so a batch reads each of its samples from
    the store once. A sample with every frame ``[V, 3, H, W]`` has each frame corrupted with the same draws."""

    def __init__(self, split: AVSplit, noise: NoiseConfig, cases: Sequence[str], salt: int) -> None:
        self.split, self.noise, self.cases, self.salt = split, noise, list(cases), salt
        self._last: tuple[int, tuple[torch.Tensor, torch.Tensor]] | None = None  # (index, sample) last read

    def __len__(self) -> int:
        return len(self.split) * len(self.cases)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, int]:
        i, position = divmod(k, len(self.cases))
        if self._last is None or self._last[0] != i:
            self._last = (i, self.split.sample(i))
        audio, visual = self._last[1]
        if visual.dim() == 4:
            frames = [eval_sample(audio, v, self.cases[position], self.noise, self.salt, i) for v in visual]
            audio, case_id = frames[0][0], frames[0][2]
            return audio, torch.stack([f[1] for f in frames]), self.split.labels[i], case_id, position
        audio, visual, case_id = eval_sample(audio, visual, self.cases[position], self.noise, self.salt, i)
        return audio, visual, self.split.labels[i], case_id, position
