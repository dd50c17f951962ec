"""MAE pretraining (CAV-MAE's objective, :class:`uvav.models.mae.AVPretrainer`) on the shared loop.

Pairs stream from the training split like every stage's samples (uncorrupted, no augmentation); masks are drawn
from generators fixed by (seed, epoch), so a resumed run ends where an uninterrupted one would. The history records
every loss term per epoch on the training pairs (``train_*``) and on the validation pairs (``val_*``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from uvav.cases import Case
from uvav.data.loading import EvalSet, TrainSet, epoch_order
from uvav.loggers import TrainingLogger
from uvav.models.mae import AVPretrainer
from uvav.resources import ResourceMeter
from uvav.scenarios import sample_generator
from uvav.train.loop import Loop, optimizer_step
from uvav.train.schedules import warmup_cosine
from uvav.train.scoring import SALTS
from uvav.train.settings import Feed, FitSettings

COMPLETE = [Case.COMPLETE.value]


def fit_masked(name: str, model: AVPretrainer, feed: Feed, settings: FitSettings, *, epochs: int, lr: float,
               weight_decay: float, device: torch.device, seed: int, autocast, checkpoint_path: Path,
               logger: TrainingLogger) -> tuple[list[dict[str, float]], dict[str, Any]]:
    """Train ``model``'s parameters that require grad (AdamW, warm-up + cosine) for ``epochs``, resuming from and
    writing ``checkpoint_path``; the history (one record per epoch) and the resources (``ResourceMeter.summary``).
    ``name``: the run's name in logs, curves and errors."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    steps = math.ceil(pairs_per_epoch(len(feed.train), settings.batch_size) / settings.batch_size)
    scheduler = warmup_cosine(optimizer, steps, epochs, settings.warmup_epochs)
    trainee = MaskedTrainee(name, epochs, model, feed, settings, device, seed, autocast, optimizer, scheduler)
    meter = ResourceMeter(device)
    loop = Loop(trainee, optimizer, scheduler, meter, logger, checkpoint_path, steps, settings.progress)
    loop.run(loop.resume())
    return loop.history, meter.summary()


def pairs_per_epoch(n: int, batch_size: int) -> int:
    """Pairs an epoch uses: all but a last batch of one pair (BatchNorm and the contrastive loss need two)."""
    return n - (n % batch_size == 1)


class MaskedTrainee:
    """MAE pretraining as :class:`uvav.train.loop.Trainee`; its checkpoint holds the whole model."""

    summary_keys = ("train_total", "val_total")

    def __init__(self, name: str, epochs: int, model: AVPretrainer, feed: Feed, settings: FitSettings,
                 device: torch.device, seed: int, autocast, optimizer: torch.optim.Optimizer, scheduler) -> None:
        self.name, self.epochs, self.model, self.feed, self.settings = name, epochs, model, feed, settings
        self.device, self.seed, self.autocast = device, seed, autocast
        self.optimizer, self.scheduler = optimizer, scheduler
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.sums: dict[str, float] = {}  # this epoch's loss terms, summed over its steps
        self.masks = torch.Generator()

    def modules(self) -> list[torch.nn.Module]:
        return [self.model]

    def batches(self, epoch: int) -> Iterable[Any]:
        """The first :func:`pairs_per_epoch` training pairs of the epoch's order, uncorrupted and unaugmented."""
        self.sums, self.masks = {}, sample_generator("pretrain-masks", self.seed, epoch)
        dataset = TrainSet(self.feed.train, self.feed.noise, COMPLETE, self.seed, epoch)
        order = epoch_order(len(dataset), self.seed, epoch)[:pairs_per_epoch(len(dataset), self.settings.batch_size)]
        return self.feed.options.loader(dataset, self.settings.batch_size, order)

    def prepare(self, epoch: int, step: int, batch: Any, where: str):
        audio, visual = (x.to(self.device, non_blocking=True) for x in batch[:2])
        return functools.partial(self._step, audio, visual, where), (audio, visual)

    def _step(self, audio: torch.Tensor, visual: torch.Tensor, where: str) -> float:
        with self.autocast():
            losses = self.model(audio, visual, self.masks)
        total = optimizer_step(losses.total, self.optimizer, self.scheduler, self.params, self.settings.grad_clip,
                               self.name, where)
        for term, value in losses.as_floats().items():
            self.sums[term] = self.sums.get(term, 0.0) + value
        return total

    def end_epoch(self, epoch: int, losses: list[float]) -> tuple[dict[str, float], dict[str, float]]:
        return ({**{f"train_{k}": v / len(losses) for k, v in self.sums.items()},
                 **{f"val_{k}": v for k, v in self.validation_losses().items()}}, {})

    @torch.no_grad()
    def validation_losses(self) -> dict[str, float]:
        """Mean losses over the validation pairs (eval mode; the same masks every epoch)."""
        self.model.eval()
        masks = sample_generator("pretrain-val-masks", self.seed)
        sums: dict[str, float] = {}
        batches = 0
        dataset = EvalSet(self.feed.val, self.feed.noise, COMPLETE, SALTS["val"])
        for audio, visual, *_ in self.feed.options.loader(dataset, self.settings.batch_size):
            with self.autocast():
                losses = self.model(audio.to(self.device), visual.to(self.device), masks)
            for term, value in losses.as_floats().items():
                sums[term] = sums.get(term, 0.0) + value
            batches += 1
        return {k: v / max(1, batches) for k, v in sums.items()}

    def state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
