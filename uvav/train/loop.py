"""The one training loop of every stage and of MAE pretraining: resume, epochs, checkpoints, curves, NaN handling.

What trains is a :class:`Trainee` (a classification stage: :class:`uvav.train.fitting.StageTrainee`; MAE
pretraining: :class:`uvav.train.self_supervised.MaskedTrainee`): its batches, its step (its loss, then
:func:`optimizer_step`), its epoch's record (validation) and the state its checkpoint adds. :class:`Loop` does
the rest: after every epoch a resumable checkpoint (the trainee's state, optimiser, schedule, history, epoch
times), resumed from when it exists (every draw is fixed by seed, epoch and sample, so a resumed run ends where an
uninterrupted one would); every step's loss and lr and every epoch's record go to the training curves; a NaN/inf
loss stops the run (:class:`NonFiniteLossError`, naming the trainee) before it touches the weights.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from uvav import distributed
from uvav.loggers import TrainingLogger
from uvav.outputs import load_checkpoint, save_checkpoint
from uvav.resources import ResourceMeter
from uvav.train.stage import NonFiniteLossError

log = logging.getLogger(__name__)


class Trainee(Protocol):
    """What :class:`Loop` trains."""

    name: str  # in logs, curves and errors
    epochs: int
    summary_keys: tuple[str, str]  # the record's keys of the training and the validation loss shown on the bar

    def modules(self) -> Sequence[torch.nn.Module]:
        """The modules put in training mode at the start of every epoch (and measured on CPU)."""

    def batches(self, epoch: int) -> Iterable[Any]:
        """The epoch's training batches."""

    def prepare(self, epoch: int, step: int, batch: Any, where: str
                ) -> tuple[Callable[[], float], tuple[torch.Tensor, ...]]:
        """The optimisation step on ``batch`` (returns its global loss; ``where`` goes into a NaN's error) and
        the batch's input tensors (counted by the memory measurement)."""

    def end_epoch(self, epoch: int, losses: list[float]) -> tuple[dict[str, float], dict[str, float]]:
        """After the epoch's steps (``losses``): its history record (without ``epoch`` and ``time_s``) and further
        values for the curves only."""

    def state(self) -> dict[str, Any]:
        """What the checkpoint holds besides the loop's own state."""

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` from a checkpoint."""


def optimizer_step(loss: torch.Tensor, optimizer, scheduler, params, grad_clip: float, name: str, where: str
                   ) -> float:
    """Backward and one optimizer and schedule step; raises :class:`NonFiniteLossError` before touching the
    weights on a NaN/inf loss (``name``/``where`` say whose and when)."""
    value = distributed.mean(loss.detach())  # every rank sees the global loss (and stops together on NaN)
    if not torch.isfinite(value):
        raise NonFiniteLossError(f"{name}: loss is {value.item()} at {where}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()  # under DDP: gradients averaged over the ranks
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    scheduler.step()
    return value.item()


@dataclass
class Loop:
    """Epochs of a :class:`Trainee` with its optimiser and schedule; ``history`` holds the epochs' records."""

    trainee: Trainee
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    meter: ResourceMeter
    logger: TrainingLogger
    checkpoint_path: Path | None
    steps_per_epoch: int
    progress: bool
    history: list[dict[str, float]] = field(default_factory=list)

    def resume(self) -> int:
        """Restore the checkpoint when there is one; the first epoch to run. Rank 0 verifies its sha256 (a
        mismatch: discarded, the run restarts) and the other ranks read it when rank 0 accepted it."""
        if self.checkpoint_path is None:
            return 0
        state = load_checkpoint(self.checkpoint_path) if distributed.is_main() else None
        if distributed.from_main(state is not None) and state is None:
            state = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
        if state is None:
            return 0
        self.trainee.load_state(state)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.history = state["history"]
        self.meter.epoch_times = list(state["epoch_times"])
        start = state["epoch"] + 1
        log.info("%s: resumed from %s at epoch %d", self.trainee.name, self.checkpoint_path, start)
        return start

    def run(self, start: int, resident_bytes: int = 0) -> None:
        """Train epochs ``start..epochs-1``; ``resident_bytes``: cached features held on the accelerator."""
        trainee, meter = self.trainee, self.meter
        meter.begin_training(resident_bytes)
        bar = tqdm(range(start, trainee.epochs), desc=trainee.name, disable=not self.progress, initial=start,
                   total=trainee.epochs)
        for epoch in bar:
            for module in trainee.modules():
                module.train()
            losses: list[float] = []
            with meter.epoch():
                batches = tqdm(trainee.batches(epoch), desc=f"epoch {epoch}", total=self.steps_per_epoch,
                               leave=False, disable=not self.progress)
                for step, batch in enumerate(batches):
                    where = f"epoch {epoch}, step {step}; last good checkpoint: {self.checkpoint_path}"
                    train_step, inputs = trainee.prepare(epoch, step, batch, where)
                    lr = self.scheduler.get_last_lr()[0]  # the rate this step uses (first group: all but the head)
                    if meter.wants_step_measurement(epoch, step, trainee.epochs):
                        losses.append(meter.measure_step(train_step, list(trainee.modules()), self.optimizer,
                                                         inputs))
                    else:
                        losses.append(train_step())
                    self.logger.step(trainee.name, epoch, step, {"train_loss": losses[-1], "lr": lr})
            record, extra = trainee.end_epoch(epoch, losses)
            self.history.append({"epoch": epoch, **record, "time_s": meter.epoch_times[-1]})
            self._report(epoch, lr, extra)
            if self.checkpoint_path is not None and distributed.is_main():
                save_checkpoint(self.checkpoint_path, {
                    **trainee.state(), "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(), "history": self.history, "epoch": epoch,
                    "epoch_times": meter.epoch_times,
                })
            bar.set_postfix(**{name: f"{self.history[-1][key]:.3f}"
                               for name, key in zip(("loss", "val"), trainee.summary_keys, strict=True)})
        meter.end_training()

    def _report(self, epoch: int, lr: float, extra: dict[str, float]) -> None:
        """The epoch's record (and ``extra``) to the curves and the log."""
        record = {k: v for k, v in self.history[-1].items() if k != "epoch"}
        self.logger.epoch(self.trainee.name, epoch, {**record, "lr": lr, **extra})
        log.info("%s epoch %d: %s", self.trainee.name, epoch, ", ".join(f"{k} {v:.4f}" for k, v in record.items()))
