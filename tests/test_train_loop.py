"""The shared training loop (uvav.train.loop.Loop) with a toy trainee: resume continues where the checkpoint ends,
with the trainee's own state, and a NaN loss names the trainee and the step."""

from __future__ import annotations

import functools

import pytest
import torch

from uvav.loggers import TrainingLogger
from uvav.resources import ResourceMeter
from uvav.train import Loop, NonFiniteLossError, optimizer_step, warmup_cosine

CPU = torch.device("cpu")


class Regression:
    """Least squares on fixed data; ``poison_at``: the (epoch, step) whose loss is NaN; ``kill_at``: the epoch
    at whose start the process "dies"."""

    summary_keys = ("train_loss", "val_loss")

    def __init__(self, epochs: int, poison_at: tuple[int, int] | None = None, kill_at: int | None = None) -> None:
        torch.manual_seed(0)
        self.name, self.epochs, self.poison_at, self.kill_at = "toy", epochs, poison_at, kill_at
        self.model = torch.nn.Linear(3, 1)
        self.x, self.y = torch.randn(12, 3), torch.randn(12, 1)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1)
        self.scheduler = warmup_cosine(self.optimizer, 3, epochs, 1.0)
        self.epochs_seen: list[int] = []

    def modules(self):
        return [self.model]

    def batches(self, epoch: int):
        if epoch == self.kill_at:
            raise KeyboardInterrupt
        return [(self.x[i:i + 4], self.y[i:i + 4]) for i in range(0, 12, 4)]

    def prepare(self, epoch: int, step: int, batch, where: str):
        return functools.partial(self._step, *batch, (epoch, step) == self.poison_at, where), batch[:1]

    def _step(self, x, y, poisoned: bool, where: str) -> float:
        loss = torch.nn.functional.mse_loss(self.model(x), y) * (float("nan") if poisoned else 1.0)
        return optimizer_step(loss, self.optimizer, self.scheduler, list(self.model.parameters()), 1.0, self.name,
                              where)

    def end_epoch(self, epoch: int, losses: list[float]):
        self.epochs_seen.append(epoch)
        with torch.no_grad():
            val = torch.nn.functional.mse_loss(self.model(self.x), self.y).item()
        return {"train_loss": sum(losses) / len(losses), "val_loss": val}, {}

    def state(self):
        return {"model": self.model.state_dict(), "epochs_seen": list(self.epochs_seen)}

    def load_state(self, state) -> None:
        self.model.load_state_dict(state["model"])
        self.epochs_seen = list(state["epochs_seen"])


def loop_for(trainee: Regression, checkpoint) -> Loop:
    return Loop(trainee, trainee.optimizer, trainee.scheduler, ResourceMeter(CPU), TrainingLogger(), checkpoint, 3,
                progress=False)


def test_a_resumed_loop_ends_where_an_uninterrupted_one_does(tmp_path):
    reference = loop_for(Regression(4), tmp_path / "reference.pt")
    reference.run(reference.resume())
    killed = loop_for(Regression(4, kill_at=2), tmp_path / "last.pt")
    with pytest.raises(KeyboardInterrupt):
        killed.run(killed.resume())
    trainee = Regression(4)
    resumed = loop_for(trainee, tmp_path / "last.pt")
    start = resumed.resume()
    assert start == 2 and trainee.epochs_seen == [0, 1]  # the trainee's own state came back with the loop's
    resumed.run(start)
    assert trainee.epochs_seen == [0, 1, 2, 3]
    assert [{k: v for k, v in h.items() if k != "time_s"} for h in resumed.history] == \
           [{k: v for k, v in h.items() if k != "time_s"} for h in reference.history]
    assert torch.equal(trainee.model.weight, reference.trainee.model.weight)


def test_a_nan_names_the_trainee_and_keeps_the_last_good_checkpoint(tmp_path):
    loop = loop_for(Regression(3, poison_at=(1, 2)), tmp_path / "last.pt")
    with pytest.raises(NonFiniteLossError, match=r"^toy: loss is nan at epoch 1, step 2; last good checkpoint: "):
        loop.run(loop.resume())
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["epoch"] == 0 and all(torch.isfinite(t).all() for t in state["model"].values())
