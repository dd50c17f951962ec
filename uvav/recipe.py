"""CAV-MAE's fine-tuning recipe as options of the FT stage: optimiser and Adam's betas, the step schedule, mixup,
label smoothing and weight averaging over epochs (``trainer.*``; each off by default, so FT trains as before).

Sources (CAV-MAE's ``src/traintest_ft.py``, ``src/dataloader.py``, ``src/run_cavmae_ft.py``):

- optimiser: ``Adam(weight_decay=5e-7, betas=(0.95, 0.999))`` (L2 in the gradient, not AdamW's decoupled decay);
- schedule: ``MultiStepLR(milestones=range(start, 1000, step), gamma=decay)`` stepped once per epoch: the first
  ``start`` epochs at the full rate, then x ``decay`` every ``step`` epochs; no warm-up;
- mixup: with probability ``mixup`` a sample is mixed with another, ``lambda ~ Beta(10, 10)``, waveforms and
  images ``lambda x + (1 - lambda) x'``. uvav's feature store holds fbanks, so uvav mixes the normalised fbanks
  (and images) of two samples of the batch, after their corruption and SpecAugment-style masks: an approximation
  (CAV-MAE mixes waveforms, then computes the fbank and masks it);
- targets: every class ``eps / K``; unmixed, the sample's classes are *set* to ``1 - eps``; mixed, they get
  ``+ lambda (1 - eps)`` and the partner's ``+ (1 - lambda)(1 - eps)`` (CAV-MAE's two formulas, kept as they are);
- weight averaging: the mean of the weights after epochs ``wa_start..wa_end`` (1-based, inclusive) is the model,
  instead of the best epoch on validation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

BETA_SHAPE = 10  # CAV-MAE's lambda ~ Beta(10, 10)


@dataclass(frozen=True)
class Recipe:
    """How a stage optimises beyond its parameters, epochs and learning rate. The default is uvav's own (AdamW,
    warm-up then cosine, hard targets, the best epoch); FT takes the trainer's (:meth:`of`)."""

    optimizer: str = "adamw"
    betas: tuple[float, float] = (0.9, 0.999)
    lr_schedule: str = "cosine"
    lr_step_start: int = 2
    lr_step_every: int = 1
    lr_step_decay: float = 0.5
    mixup: float = 0.0
    label_smoothing: float = 0.0
    wa_start: int | None = None
    wa_end: int | None = None

    @classmethod
    def of(cls, trainer: Any) -> Recipe:
        """The recipe of a ``trainer`` config node (keys absent in older configs: the default)."""
        values = {k: trainer.get(k, getattr(cls, k)) for k in cls.__dataclass_fields__}
        return cls(**{**values, "betas": tuple(values["betas"])})

    @property
    def soft_targets(self) -> bool:
        """True when the loss needs float targets [B, K] (mixup or label smoothing)."""
        return self.mixup > 0 or self.label_smoothing > 0

    @property
    def averages(self) -> bool:
        return self.wa_start is not None

    def averaged(self, epoch: int) -> bool:
        """True when the weights after (0-based) ``epoch`` enter the average."""
        return self.averages and self.wa_start <= epoch + 1 <= self.wa_end

    def optimizer_for(self, groups: list[dict[str, Any]], lr: float, weight_decay: float) -> torch.optim.Optimizer:
        kind = torch.optim.Adam if self.optimizer == "adam" else torch.optim.AdamW
        return kind(groups, lr=lr, weight_decay=weight_decay, betas=self.betas)

    def lr_factor(self, epoch: int) -> float:
        """The step schedule's factor in (0-based) ``epoch``: ``decay`` to the number of milestones reached."""
        if epoch < self.lr_step_start:
            return 1.0
        return self.lr_step_decay ** ((epoch - self.lr_step_start) // self.lr_step_every + 1)


@dataclass(frozen=True)
class Mix:
    """Which rows of a batch are mixed, with which row (``partner``) and weight (``lam``; 1 where unmixed)."""

    mixed: torch.Tensor  # bool [B]
    partner: torch.Tensor  # long [B]
    lam: torch.Tensor  # float [B]


def draw_mix(batch: int, share: float, gen: torch.Generator) -> Mix:
    """Each row mixed with probability ``share`` with a uniformly drawn row of the batch (possibly itself, as
    CAV-MAE may draw the sample itself), ``lambda ~ Beta(10, 10)`` drawn as X / (X + Y) with X, Y ~ Gamma(10)
    (sums of ten exponentials), so that every draw comes from ``gen``."""
    mixed = torch.rand(batch, generator=gen) < share
    partner = torch.randint(batch, (batch,), generator=gen)
    gammas = -torch.rand(2, batch, BETA_SHAPE, generator=gen).clamp_min(1e-12).log().sum(-1)
    lam = torch.where(mixed, gammas[0] / gammas.sum(0), torch.ones(batch))
    return Mix(mixed, partner, lam)


def mix_inputs(inputs: tuple[torch.Tensor, ...], mix: Mix) -> tuple[torch.Tensor, ...]:
    """``lambda x + (1 - lambda) x[partner]`` of every input tensor (fbanks [B, T, F], images [B, 3, H, W])."""
    out = []
    for x in inputs:
        lam = mix.lam.to(x.device, x.dtype).view(-1, *([1] * (x.dim() - 1)))
        out.append(lam * x + (1 - lam) * x[mix.partner.to(x.device)])
    return tuple(out)


def soft_targets(labels: torch.Tensor, num_classes: int, smoothing: float, mix: Mix | None) -> torch.Tensor:
    """Float targets [B, K] from class indices [B] or multi-hot rows [B, K], as CAV-MAE's dataloader makes them."""
    hot = F.one_hot(labels, num_classes).float() if labels.dim() == 1 else labels.float()
    floor = smoothing / num_classes
    unmixed = torch.where(hot > 0, torch.full_like(hot, 1 - smoothing), torch.full_like(hot, floor))
    if mix is None:
        return unmixed
    lam = mix.lam.to(hot.device).view(-1, 1)
    mixed = floor + (1 - smoothing) * (lam * hot + (1 - lam) * hot[mix.partner.to(hot.device)])
    return torch.where(mix.mixed.to(hot.device).view(-1, 1), mixed, unmixed)


class WeightAverage:
    """The running sum of a stage's trainable weights over the averaged epochs (saved with a resumable
    checkpoint, so a resumed run averages the same weights)."""

    def __init__(self, state: dict[str, Any] | None = None) -> None:
        self.total: dict[str, torch.Tensor] = dict(state["total"]) if state else {}
        self.count: int = state["count"] if state else 0

    def add(self, weights: dict[str, torch.Tensor]) -> None:
        """Add one epoch's weights (float copies: ``total[k] + w[k]`` in epoch order, as CAV-MAE sums)."""
        for name, value in weights.items():
            self.total[name] = self.total[name] + value if name in self.total else value.clone()
        self.count += 1

    def mean(self) -> dict[str, torch.Tensor]:
        return {name: value / float(self.count) for name, value in self.total.items()}

    def state(self) -> dict[str, Any]:
        return {"total": self.total, "count": self.count}
