"""Learning-rate schedules, stepped once per optimiser step: uvav's warm-up + cosine and CAV-MAE's step schedule."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from uvav.recipe import Recipe

if TYPE_CHECKING:
    from uvav.train.stage import Stage


def _lr_lambda(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def warmup_cosine(optimizer: torch.optim.Optimizer, steps_per_epoch: int, epochs: int, warmup_epochs: float
                  ) -> torch.optim.lr_scheduler.LambdaLR:
    """uvav's schedule: linear warm-up over ``warmup_epochs`` (at least one step), then cosine to zero."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(steps_per_epoch * epochs, max(1, int(warmup_epochs * steps_per_epoch))))


def warmup_step(optimizer: torch.optim.Optimizer, steps_per_epoch: int, warmup_epochs: float, recipe: Recipe
                ) -> torch.optim.lr_scheduler.LambdaLR:
    """CAV-MAE's step schedule (:meth:`uvav.recipe.Recipe.lr_factor`, constant within an epoch) after the same
    linear warm-up (``warmup_epochs=0``: none, as CAV-MAE)."""
    warmup = max(1, int(warmup_epochs * steps_per_epoch))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup) * recipe.lr_factor(step // steps_per_epoch))


def lr_scheduler(optimizer: torch.optim.Optimizer, stage: Stage, steps_per_epoch: int, warmup_epochs: float
                 ) -> torch.optim.lr_scheduler.LambdaLR:
    """The stage's schedule, per optimiser step: its recipe's ``lr_schedule`` (cosine or step)."""
    if stage.recipe.lr_schedule == "step":
        return warmup_step(optimizer, steps_per_epoch, warmup_epochs, stage.recipe)
    return warmup_cosine(optimizer, steps_per_epoch, stage.epochs, warmup_epochs)
