"""Training a classification stage (FT, head only, LoRA, adapters, PL) on the shared loop (:mod:`uvav.train.loop`).

Samples stream from the split through a DataLoader (:mod:`uvav.data.loading`): every training sample gets a case
drawn from the stage's training cases and is corrupted accordingly, with draws fixed by (seed, epoch, sample). A
stage that sees the frozen base's encoder outputs unchanged (:attr:`Stage.shares_encodings`, its method's rule)
trains on cached encoder outputs (:mod:`uvav.train.token_cache`), shared with the job's other such stages. The weights
kept are those of the epoch with the best validation accuracy (mAP for multi-label data), or CAV-MAE's weight
average when the recipe asks for it.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from uvav import distributed
from uvav.data.loading import TrainSet, epoch_order
from uvav.loggers import TrainingLogger
from uvav.recipe import WeightAverage, draw_mix, mix_inputs, soft_targets
from uvav.resources import ResourceMeter
from uvav.scenarios import sample_generator
from uvav.train.loop import Loop, optimizer_step
from uvav.train.schedules import lr_scheduler
from uvav.train.scoring import SALTS, evaluate_split, score
from uvav.train.settings import Feed, FitSettings
from uvav.train.stage import Stage, training_forward
from uvav.train.token_cache import SharedViews, TokenCache, build_caches, place_encoders


@dataclass
class FitResult:
    best_epoch: int
    best_val: float
    history: list[dict[str, float]]
    resources: dict[str, Any]
    # with weight averaging: {"epochs": [start, end] (1-based), "count", "val_acc"} of the averaged model, which
    # the stage then holds (best_epoch/best_val still describe the per-epoch validation)
    weight_average: dict[str, Any] | None = None


def fit(
    stage: Stage, feed: Feed, settings: FitSettings, device: torch.device, seed: int, autocast,
    checkpoint_path: Path | None = None, logger: TrainingLogger | None = None, views: SharedViews | None = None,
) -> FitResult:
    """Train ``stage`` and keep the weights of the epoch with the best validation accuracy, or mAP for multi-label
    data (mean over the stage's training cases, first eval mode; ``history``'s ``val_acc`` holds it). Writes a
    resumable checkpoint after every epoch when ``checkpoint_path`` is given, and resumes from it when it exists.
    ``settings``: :class:`FitSettings` (or the ``trainer`` node it is built from); ``logger`` receives the curves;
    ``views``: the job's cached training views, shared with its other stages (else the stage caches its own, drawn
    from ``seed``, and frees them)."""
    settings = FitSettings.of(settings)
    optimizer = stage.recipe.optimizer_for(stage.param_groups(), stage.lr, stage.weight_decay)
    steps_per_epoch = math.ceil(len(feed.train) / settings.batch_size)
    scheduler = lr_scheduler(optimizer, stage, steps_per_epoch, settings.warmup_epochs)
    meter = ResourceMeter(device)
    trainee = StageTrainee(stage, feed, settings, device, seed, autocast, optimizer, scheduler)
    loop = Loop(trainee, optimizer, scheduler, meter, logger or TrainingLogger(), checkpoint_path, steps_per_epoch,
                settings.progress and distributed.is_main())
    start = loop.resume()
    # a distributed job streams every stage (each rank would need the whole cache)
    if stage.cache_views > 0 and stage.cacheable() and start < stage.epochs and distributed.world_size() == 1:
        trainee.caches = (views.get(stage, feed, settings, device, autocast, meter) if views is not None
                          else build_caches(stage, feed, settings, device, seed, autocast, meter))
    trainee.net = training_forward(stage, device)
    try:
        loop.run(start, sum(c.nbytes for c in trainee.caches if c.on_device) if trainee.caches else 0)
    finally:
        if trainee.caches:
            for cache in trainee.caches if views is None else ():  # shared views: the job frees them
                cache.close()
            place_encoders(stage, device)
    averaged = None
    if stage.recipe.averages:  # CAV-MAE: the averaged weights replace the best epoch's
        if not trainee.average.count:
            raise ValueError(f"{stage.name}: trainer.wa_start..wa_end ({stage.recipe.wa_start}..{stage.recipe.wa_end})"
                             f" holds none of its {stage.epochs} epochs; set them within 1..{stage.epochs}")
        _load_trainable(stage, trainee.average.mean())
        per_case = trainee.validate(None)
        averaged = {"epochs": [stage.recipe.wa_start, stage.recipe.wa_end], "count": trainee.average.count,
                    "val_acc": sum(per_case.values()) / len(per_case)}
    elif trainee.best_state is not None:
        _load_trainable(stage, trainee.best_state)
    return FitResult(trainee.best_epoch, trainee.best_val, loop.history, meter.summary(), averaged)


class StageTrainee:
    """A stage as :class:`uvav.train.loop.Trainee`: classification loss, validation per training case, the best
    epoch's weights and the weight average; trains on ``caches`` (train views, validation) when they are set."""

    summary_keys = ("train_loss", "val_acc")

    def __init__(self, stage: Stage, feed: Feed, settings: FitSettings, device: torch.device, seed: int, autocast,
                 optimizer: torch.optim.Optimizer, scheduler) -> None:
        self.stage, self.feed, self.settings, self.device, self.seed = stage, feed, settings, device, seed
        self.autocast, self.optimizer, self.scheduler = autocast, optimizer, scheduler
        self.name, self.epochs = stage.name, stage.epochs
        self.params = stage.trainable()
        self.multi_label = feed.train.labels.dim() == 2  # multi-hot labels: BCE, selection on validation mAP
        self.caches: tuple[TokenCache, TokenCache] | None = None
        self.net: torch.nn.Module | None = None
        self.best_val, self.best_epoch, self.best_state = -1.0, -1, None
        self.average = WeightAverage()

    def modules(self) -> list[torch.nn.Module]:
        return self.stage.modules()

    def batches(self, epoch: int) -> Iterator[Any]:
        return _train_batches(self.stage, self.feed, self.settings.batch_size, self.device, self.seed, epoch,
                              self.caches)

    def prepare(self, epoch: int, step: int, batch: Any, where: str):
        inputs, case_ids, labels, weight = batch
        inputs, targets = recipe_batch(self.stage, inputs, labels.to(self.device),
                                       (self.seed, epoch, step, distributed.rank()))
        forward = functools.partial(self.net, *inputs, case_ids, self.caches is not None)
        return functools.partial(self._step, forward, targets, weight, where), inputs

    def _step(self, forward, targets: torch.Tensor, weight: float, where: str) -> float:
        """One optimisation step on the loss x ``weight`` (1 in one process); returns the (global) loss."""
        stage = self.stage
        with self.autocast():
            loss = classification_loss(forward(), targets, self.multi_label)
            if stage.orthogonality and stage.bank is not None:
                loss = loss + stage.orthogonality * stage.bank.orthogonality_penalty()
        return optimizer_step(loss * weight, self.optimizer, self.scheduler, self.params, self.settings.grad_clip,
                              stage.name, where)

    def end_epoch(self, epoch: int, losses: list[float]) -> tuple[dict[str, float], dict[str, float]]:
        per_case = self.validate(self.caches[1] if self.caches else None)
        val = sum(per_case.values()) / len(per_case)
        if val > self.best_val:
            self.best_val, self.best_epoch, self.best_state = val, epoch, _trainable_state(self.stage)
        if self.stage.recipe.averaged(epoch):
            self.average.add(_trainable_state(self.stage))
        return ({"train_loss": sum(losses) / len(losses), "val_acc": val},
                {f"val_{case}": acc for case, acc in per_case.items()})

    def validate(self, tokens: TokenCache | None) -> dict[str, float]:
        """Validation accuracy (multi-label data: mAP) per training case, in the stage's first eval mode."""
        stage, feed, batch_size = self.stage, self.feed, self.settings.eval_batch_size
        mode, cases = stage.eval_modes[0], list(stage.train_cases)
        if tokens is not None:
            return score(stage, tokens.batches(range(tokens.rows), batch_size, feed.options), cases, [mode],
                         self.device, self.autocast, encoded=True).values[mode]
        return evaluate_split(stage, feed.val, feed.noise, SALTS["val"], [mode], self.device, batch_size,
                              self.autocast, feed.options, cases).values[mode]

    def state(self) -> dict[str, Any]:
        return {"trainable": _trainable_state(self.stage), "best_val": self.best_val, "best_epoch": self.best_epoch,
                "best_state": self.best_state, "weight_average": self.average.state()}

    def load_state(self, state: dict[str, Any]) -> None:
        _load_trainable(self.stage, state["trainable"])
        self.best_val, self.best_epoch, self.best_state = state["best_val"], state["best_epoch"], state["best_state"]
        self.average = WeightAverage(state.get("weight_average"))


def recipe_batch(stage: Stage, inputs: tuple[torch.Tensor, ...], labels: torch.Tensor, draws: tuple[Any, ...]
                 ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """A training batch's inputs and targets under the stage's recipe: mixed rows (``mixup``, drawn from
    ``sample_generator("mixup", *draws)``: the same after a resume) and soft targets [B, K]; unchanged when neither
    mixup nor label smoothing is on."""
    recipe = stage.recipe
    if not recipe.soft_targets:
        return inputs, labels
    mix = draw_mix(labels.shape[0], recipe.mixup, sample_generator("mixup", *draws)) if recipe.mixup > 0 else None
    num_classes = stage.model.head[-1].out_features
    targets = soft_targets(labels, num_classes, recipe.label_smoothing, mix)
    return (mix_inputs(inputs, mix) if mix is not None else inputs), targets


def classification_loss(logits: torch.Tensor, targets: torch.Tensor, multi_label: bool) -> torch.Tensor:
    """The training objective. Multi-label data: BCE with logits on (possibly soft) multi-hot targets ``[B, K]``,
    as CAV-MAE trains AudioSet; single-label data: cross-entropy with class indices ``[B]`` (or probabilities)."""
    if multi_label:
        return F.binary_cross_entropy_with_logits(logits.float(), targets.float())
    return F.cross_entropy(logits.float(), targets)


def _train_batches(stage: Stage, feed: Feed, batch_size: int, device: torch.device, seed: int, epoch: int,
                   caches: tuple[TokenCache, TokenCache] | None):
    """``((audio, visual) or (tokens_a, tokens_v) on the device, case_ids, labels, loss weight)`` for one epoch.
    In a distributed job each rank gets its part of every global batch of ``batch_size`` samples, and a loss
    weight that makes the mean over the ranks the global batch's mean (:func:`uvav.distributed.batch_parts`)."""
    n = len(feed.train)
    order = epoch_order(n, seed, epoch)
    if caches is None:
        dataset = TrainSet(feed.train, feed.noise, stage.train_cases, seed, epoch, feed.augmentation,
                           missing_rate=feed.missing_rate)
        if distributed.world_size() > 1:
            parts = distributed.batch_parts(order, batch_size)
            loader, weights = feed.options.batch_loader(dataset, [rows for rows, _ in parts]), [w for _, w in parts]
        else:
            loader, weights = feed.options.loader(dataset, batch_size, order), itertools.repeat(1.0)
        for (audio, visual, labels, case_ids), weight in zip(loader, weights, strict=False):
            yield ((audio.to(device, non_blocking=True), visual.to(device, non_blocking=True)), case_ids, labels,
                   weight)
        return
    views = torch.randint(stage.cache_views, (n,), generator=sample_generator("pick-view", seed, epoch))
    rows = [int(views[i]) * n + i for i in order]  # one of its views per sample
    for tokens_a, tokens_v, labels, case_ids, _ in caches[0].batches(rows, batch_size, feed.options):
        yield (tokens_a, tokens_v), case_ids, labels, 1.0


def _trainable_state(stage: Stage) -> dict[str, torch.Tensor]:
    """Copies of the trainable tensors, keyed ``model.<name>`` / ``bank.<name>``."""
    state = {}
    for prefix, module in (("model", stage.model), ("bank", stage.bank)):
        if module is None:
            continue
        for name, p in module.named_parameters():
            if p.requires_grad:
                state[f"{prefix}.{name}"] = p.detach().cpu().clone()
    return state


def _load_trainable(stage: Stage, state: dict[str, torch.Tensor]) -> None:
    params = {}
    for prefix, module in (("model", stage.model), ("bank", stage.bank)):
        if module is not None:
            params.update({f"{prefix}.{n}": p for n, p in module.named_parameters()})
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)
