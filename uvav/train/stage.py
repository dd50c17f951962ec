"""What a training stage is.

One loop serves every stage (:mod:`uvav.train.fitting`). What differs between FT, the head-only baseline and PL is
a :class:`Stage`: which parameters train, which prompt mode the forward pass uses, and which cases the samples are
drawn from; its forward passes (:func:`logits_for`, :func:`classify_tokens`) are defined here.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from uvav import distributed
from uvav.cases import NO_PROMPTS, PROMPTED_MODES, PromptMode
from uvav.models.classifier import AVClassifier
from uvav.models.prompts import PromptBank
from uvav.recipe import Recipe


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass(kw_only=True)
class Stage:
    """What one training stage optimises and how its forward pass picks prompts. Build one with a factory:
    :meth:`finetune`, :meth:`frozen`, :meth:`prompted` or :meth:`trained` (evaluation only).

    ``train_mode``: the prompt mode of training, ``none`` (no prompts), ``oracle`` (each sample its own case's
    prompt set) or ``uncertain`` (all sets). ``eval_modes``: modes to score with; the first is the
    model-selection metric.
    """

    name: str
    model: AVClassifier
    train_cases: list[str]
    bank: PromptBank | None = None
    train_mode: str = PromptMode.NONE.value
    eval_modes: tuple[str, ...] = NO_PROMPTS
    epochs: int = 0
    lr: float = 0.0
    weight_decay: float = 0.0
    cache_views: int = 0  # > 0: precompute this many corrupted views of the frozen encoders' outputs
    # its encoders are the frozen base's, unchanged, and it needs nothing else of a sample (its method's rule,
    # uvav.methods.Method.shares_encodings): it trains on cached views and is scored on the shared encodings
    shares_encodings: bool = False
    # beyond that, only its head differs from the base (the base itself, the head-only baseline): it is scored on
    # the base's pooled features (uvav.models.classifier.AVClassifier.pool_encoded), shared with those stages
    shares_features: bool = False
    orthogonality: float = 0.0  # weight of the prompt sets' orthogonality penalty in the loss
    head_lr_scale: float = 1.0  # the classifier head's learning rate is lr x this
    recipe: Recipe = field(default_factory=Recipe)  # optimiser, schedule, targets, weight averaging (uvav.recipe)

    def __post_init__(self) -> None:
        if self.shares_encodings and self.epochs and (not self.encoders_frozen() or self.conditioned()):
            raise ValueError(f"stage {self.name} claims to share the frozen base's encoder outputs, but its encoders "
                             "train, see input-level prompts, or its prompts are mixed from the input")
        beyond_head = [n for n, p in self.model.named_parameters()  # what trains (an evaluated stage: nothing)
                       if self.epochs and p.requires_grad and not n.startswith("head.")]
        if self.shares_features and (not self.shares_encodings or self.bank is not None or beyond_head):
            raise ValueError(f"stage {self.name} claims to share the frozen base's pooled features, but it does not "
                             "share its encoder outputs, has prompts, or trains more than its head")

    @classmethod
    def finetune(cls, model: AVClassifier, cases: list[str], *, name: str, epochs: int, lr: float,
                 weight_decay: float, head_lr_scale: float = 1.0, recipe: Recipe | None = None) -> Stage:
        """Every weight of ``model`` trains, no prompts (the FT stage, called ``name``); the head at
        ``lr x head_lr_scale``; ``recipe``: CAV-MAE's fine-tuning options (default: none)."""
        return cls(name=name, model=model, train_cases=list(cases), epochs=epochs, lr=lr, weight_decay=weight_decay,
                   head_lr_scale=head_lr_scale, recipe=recipe or Recipe())

    @classmethod
    def frozen(cls, name: str, model: AVClassifier, cases: list[str], *, epochs: int, lr: float, weight_decay: float,
               cache_views: int = 0, shares_encodings: bool = False, shares_features: bool = False) -> Stage:
        """Only ``model``'s parameters that require grad train (head only, LoRA, adapters), no prompts."""
        return cls(name=name, model=model, train_cases=list(cases), epochs=epochs, lr=lr, weight_decay=weight_decay,
                   cache_views=cache_views, shares_encodings=shares_encodings, shares_features=shares_features)

    @classmethod
    def prompted(cls, name: str, model: AVClassifier, bank: PromptBank, cases: list[str], *, train_mode: str,
                 epochs: int, lr: float, weight_decay: float, cache_views: int = 0, orthogonality: float = 0.0,
                 eval_modes: tuple[str, ...] = PROMPTED_MODES, shares_encodings: bool = False) -> Stage:
        """Prompts (and the parameters of ``model`` that require grad) train; scored in ``eval_modes``."""
        return cls(name=name, model=model, bank=bank, train_mode=train_mode, eval_modes=tuple(eval_modes),
                   train_cases=list(cases), epochs=epochs, lr=lr, weight_decay=weight_decay,
                   cache_views=cache_views, orthogonality=orthogonality, shares_encodings=shares_encodings)

    @classmethod
    def trained(cls, name: str, model: AVClassifier, bank: PromptBank | None, cases: list[str], *,
                eval_modes: tuple[str, ...] = NO_PROMPTS, shares_encodings: bool = False,
                shares_features: bool = False) -> Stage:
        """A trained model (with its prompts) to evaluate in ``eval_modes``: nothing trains. ``shares_encodings``
        (and ``shares_features``): its encoders (and fusion) are the job's frozen base's (the FT model itself)."""
        return cls(name=name, model=model, bank=bank, eval_modes=tuple(eval_modes), train_cases=list(cases),
                   shares_encodings=shares_encodings, shares_features=shares_features)

    def trainable(self) -> list[torch.nn.Parameter]:
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.bank is not None:
            params += [p for p in self.bank.parameters() if p.requires_grad]
        return params

    def param_groups(self) -> list[dict[str, Any]]:
        """The optimizer's parameter groups: the trainable head at ``lr x head_lr_scale``, the rest at ``lr``."""
        head = {id(p) for p in self.model.head.parameters()}
        params = self.trainable()
        groups = [{"params": [p for p in params if id(p) not in head], "lr": self.lr},
                  {"params": [p for p in params if id(p) in head], "lr": self.lr * self.head_lr_scale}]
        return [group for group in groups if group["params"]]

    def modules(self) -> list[torch.nn.Module]:
        return [m for m in (self.model, self.bank) if m is not None]

    def encoders_frozen(self) -> bool:
        """True when no gradient has to pass through the modality encoders."""
        encoder_params = [*self.model.audio.parameters(), *self.model.visual.parameters()]
        input_prompts = self.bank is not None and self.bank.input_audio is not None
        return not input_prompts and not any(p.requires_grad for p in encoder_params)

    def conditioned(self) -> bool:
        """True when the prompts are mixed per sample from its input (they need the input, not only tokens)."""
        return self.bank is not None and self.bank.router is not None

    def cacheable(self) -> bool:
        """True when the stage can train on cached encoder outputs: :attr:`shares_encodings` (checked at creation
        against its parameters)."""
        return self.shares_encodings

    def query(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor | None:
        """The input summaries conditioned prompts are mixed from; None for every other stage."""
        if not self.conditioned():
            return None
        with torch.no_grad():
            return self.model.input_summary(audio, visual)

    def select(self, mode: str, batch: int, case_ids: torch.Tensor, query: torch.Tensor | None = None):
        return None if mode == "none" else self.bank.select(mode, batch, case_ids, query)


def logits_for(
    stage: Stage, audio: torch.Tensor, visual: torch.Tensor, case_ids: torch.Tensor, mode: str
) -> torch.Tensor:
    """Forward pass; the encoders run without autograd when no gradient has to pass through them."""
    prompts = stage.select(mode, audio.shape[0], case_ids, stage.query(audio, visual))
    if stage.encoders_frozen():
        with torch.no_grad():
            a, v = stage.model.encode(audio, visual, prompts)
        return stage.model.classify_encoded(a, v, prompts)
    return stage.model(audio, visual, prompts)


def classify_tokens(stage: Stage, tokens_a, tokens_v, case_ids: torch.Tensor, mode: str) -> torch.Tensor:
    """Logits from (cached) encoder outputs: fusion with this mode's prompts, shared blocks, head."""
    return stage.model.classify_encoded(tokens_a, tokens_v, stage.select(mode, tokens_a.shape[0], case_ids))


class TrainingForward(torch.nn.Module):
    """A stage's training forward pass as one module (its model and prompt bank), the unit that
    ``DistributedDataParallel`` wraps: gradients of everything that trains are averaged over the ranks."""

    def __init__(self, stage: Stage) -> None:
        super().__init__()
        self.stage = stage
        self.model = stage.model
        self.bank = stage.bank

    def forward(self, audio: torch.Tensor, visual: torch.Tensor, case_ids: torch.Tensor, encoded: bool
                ) -> torch.Tensor:
        """Logits in the stage's training mode; ``encoded``: the inputs are (cached) encoder outputs."""
        forward = classify_tokens if encoded else logits_for
        return forward(self.stage, audio, visual, case_ids, self.stage.train_mode)


def training_forward(stage: Stage, device: torch.device) -> torch.nn.Module:
    """:class:`TrainingForward`, wrapped in DDP in a distributed job (NCCL on GPUs, gloo on CPU). Every trainable
    tensor gets a gradient at every step (a case's prompt set is a slice of one tensor per place, so a case absent
    from a batch gets zeros), hence no search for unused parameters. With one rank there is nothing to average
    (torchrun --nproc_per_node=1): no wrapper (with it, FT epochs took 1.10x as long on 2 CPU cores, twice)."""
    forward = TrainingForward(stage)
    if distributed.world_size() == 1:
        return forward
    return DistributedDataParallel(forward, device_ids=[device.index] if device.type == "cuda" else None)


def freeze_for_prompts(model: AVClassifier, train_head: bool) -> AVClassifier:
    """A copy of ``model`` with every weight frozen except (optionally) the classifier head."""
    frozen = copy.deepcopy(model)
    for p in frozen.parameters():
        p.requires_grad_(False)
    if train_head:
        for p in frozen.head.parameters():
            p.requires_grad_(True)
    return frozen
