"""Training loop of every stage.

One loop serves every stage. What differs between FT, the head-only baseline and PL is a :class:`Stage`:
which parameters train, which prompt mode the forward pass uses, and which cases the samples are drawn from.
Samples stream from the split through a DataLoader (:mod:`uvav.data.loading`): every training sample gets a
case drawn from the stage's training cases and is corrupted accordingly, with draws fixed by (seed, epoch,
sample). A stage whose encoders are frozen can train on cached encoder outputs (:mod:`uvav.token_cache`).
"""

from __future__ import annotations

import copy
import functools
import itertools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from uvav import distributed
from uvav.cases import NO_PROMPTS, PROMPTED_MODES, PromptMode
from uvav.config import NoiseConfig
from uvav.data.base import AVSplit
from uvav.data.loading import EvalSet, LoaderOptions, TrainSet, epoch_order
from uvav.evaluation import SALTS, evaluate_split, score
from uvav.loggers import TrainingLogger
from uvav.methods import FT
from uvav.models.classifier import AVClassifier
from uvav.models.prompts import PromptBank
from uvav.outputs import load_checkpoint, save_checkpoint
from uvav.recipe import Recipe, WeightAverage, draw_mix, mix_inputs, soft_targets
from uvav.resources import ResourceMeter
from uvav.scenarios import sample_generator
from uvav.token_cache import TokenCache, cache_dtype, encode_into

log = logging.getLogger(__name__)


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
    orthogonality: float = 0.0  # weight of the prompt sets' orthogonality penalty in the loss
    head_lr_scale: float = 1.0  # the classifier head's learning rate is lr x this
    recipe: Recipe = field(default_factory=Recipe)  # optimiser, schedule, targets, weight averaging (uvav.recipe)

    @classmethod
    def finetune(cls, model: AVClassifier, cases: list[str], *, epochs: int, lr: float, weight_decay: float,
                 head_lr_scale: float = 1.0, recipe: Recipe | None = None) -> Stage:
        """Every weight of ``model`` trains, no prompts (the FT stage); the head at ``lr x head_lr_scale``;
        ``recipe``: CAV-MAE's fine-tuning options (default: none)."""
        return cls(name=FT, model=model, train_cases=list(cases), epochs=epochs, lr=lr, weight_decay=weight_decay,
                   head_lr_scale=head_lr_scale, recipe=recipe or Recipe())

    @classmethod
    def frozen(cls, name: str, model: AVClassifier, cases: list[str], *, epochs: int, lr: float, weight_decay: float,
               cache_views: int = 0) -> Stage:
        """Only ``model``'s parameters that require grad train (head only, LoRA, adapters), no prompts."""
        return cls(name=name, model=model, train_cases=list(cases), epochs=epochs, lr=lr, weight_decay=weight_decay,
                   cache_views=cache_views)

    @classmethod
    def prompted(cls, name: str, model: AVClassifier, bank: PromptBank, cases: list[str], *, train_mode: str,
                 epochs: int, lr: float, weight_decay: float, cache_views: int = 0, orthogonality: float = 0.0,
                 eval_modes: tuple[str, ...] = PROMPTED_MODES) -> Stage:
        """Prompts (and the parameters of ``model`` that require grad) train; scored in ``eval_modes``."""
        return cls(name=name, model=model, bank=bank, train_mode=train_mode, eval_modes=tuple(eval_modes),
                   train_cases=list(cases), epochs=epochs, lr=lr, weight_decay=weight_decay,
                   cache_views=cache_views, orthogonality=orthogonality)

    @classmethod
    def trained(cls, name: str, model: AVClassifier, bank: PromptBank | None, cases: list[str], *,
                eval_modes: tuple[str, ...] = NO_PROMPTS) -> Stage:
        """A trained model (with its prompts) to evaluate in ``eval_modes``: nothing trains."""
        return cls(name=name, model=model, bank=bank, eval_modes=tuple(eval_modes), train_cases=list(cases))

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
        """True when the stage can train on cached encoder outputs."""
        return self.encoders_frozen() and not self.conditioned()

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


@dataclass
class Feed:
    """Where a stage's samples come from and how they are batched; where file-backed token caches go."""

    train: AVSplit
    val: AVSplit
    noise: NoiseConfig
    options: LoaderOptions
    augmentation: tuple[int, int, int] = (0, 0, 0)  # (freq_mask, time_mask, image_shift), training only
    missing_rate: float | None = None  # share of training samples given a corrupted case (None: uniform draw)
    token_dir: Path | None = None
    cache_dtype: str = "auto"
    cache_device_gb: float = 16.0


@dataclass
class FitResult:
    best_epoch: int
    best_val: float
    history: list[dict[str, float]]
    resources: dict[str, Any]
    # with weight averaging: {"epochs": [start, end] (1-based), "count", "val_acc"} of the averaged model, which
    # the stage then holds (best_epoch/best_val still describe the per-epoch validation)
    weight_average: dict[str, Any] | None = None


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


def fit(
    stage: Stage, feed: Feed, trainer, device: torch.device, seed: int, autocast,
    checkpoint_path: Path | None = None, logger: TrainingLogger | None = None,
) -> FitResult:
    """Train ``stage`` and keep the weights of the epoch with the best validation accuracy, or mAP for multi-label
    data (mean over the stage's training cases, first eval mode; ``history``'s ``val_acc`` holds it). Writes a
    resumable checkpoint after every epoch when ``checkpoint_path`` is given, and resumes from it when it exists
    (every draw is fixed by seed, epoch and sample, so a resumed run ends where an uninterrupted one would).
    ``logger`` receives the curves."""
    logger = logger or TrainingLogger()
    params = stage.trainable()
    multi_label = feed.train.labels.dim() == 2  # multi-hot labels: BCE, selection on validation mAP
    optimizer = stage.recipe.optimizer_for(stage.param_groups(), stage.lr, stage.weight_decay)
    steps_per_epoch = math.ceil(len(feed.train) / trainer.batch_size)
    scheduler = lr_scheduler(optimizer, stage, steps_per_epoch, trainer.warmup_epochs)
    average = WeightAverage()
    meter = ResourceMeter(device)
    history: list[dict[str, float]] = []
    best_val, best_epoch, best_state = -1.0, -1, None
    start_epoch = 0
    state = None
    if checkpoint_path is not None:  # rank 0 verifies the sha256 (a mismatch: discarded, the stage restarts)
        state = load_checkpoint(checkpoint_path) if distributed.is_main() else None
        if distributed.from_main(state is not None) and state is None:
            state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    if state is not None:
        _load_trainable(stage, state["trainable"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history, best_val, best_epoch = state["history"], state["best_val"], state["best_epoch"]
        best_state, start_epoch = state["best_state"], state["epoch"] + 1
        average = WeightAverage(state.get("weight_average"))
        meter.epoch_times = list(state["epoch_times"])
        log.info("%s: resumed from %s at epoch %d", stage.name, checkpoint_path, start_epoch)

    # a distributed job streams every stage (each rank would need the whole cache)
    caches = _build_caches(stage, feed, trainer, device, seed, autocast, meter) if (
        stage.cache_views > 0 and stage.cacheable() and start_epoch < stage.epochs
        and distributed.world_size() == 1) else None
    net = training_forward(stage, device)
    progress = trainer.progress and distributed.is_main()
    try:
        meter.begin_training(sum(c.nbytes for c in caches if c.on_device) if caches else 0)
        bar = tqdm(range(start_epoch, stage.epochs), desc=stage.name, disable=not progress,
                   initial=start_epoch, total=stage.epochs)
        for epoch in bar:
            for module in stage.modules():
                module.train()
            losses: list[float] = []
            with meter.epoch():
                batches = tqdm(_train_batches(stage, feed, trainer.batch_size, device, seed, epoch, caches),
                               desc=f"epoch {epoch}", total=steps_per_epoch, leave=False, disable=not progress)
                for step, (inputs, case_ids, labels, weight) in enumerate(batches):
                    inputs, targets = recipe_batch(stage, inputs, labels.to(device),
                                                   (seed, epoch, step, distributed.rank()))
                    forward = functools.partial(net, *inputs, case_ids, caches is not None)
                    train_step = functools.partial(
                        _train_step, stage, optimizer, scheduler, params, forward, targets, weight,
                        autocast, trainer.grad_clip,
                        f"epoch {epoch}, step {step}; last good checkpoint: {checkpoint_path}", multi_label,
                    )
                    lr = scheduler.get_last_lr()[0]  # the rate this step uses (first group: all but the head)
                    if meter.wants_step_measurement(epoch, step, stage.epochs):
                        losses.append(meter.measure_step(train_step, stage.modules(), optimizer, inputs))
                    else:
                        losses.append(train_step())
                    logger.step(stage.name, epoch, step, {"train_loss": losses[-1], "lr": lr})
            per_case = _validate(stage, feed, trainer.eval_batch_size, device, autocast,
                                 caches[1] if caches else None)
            val = sum(per_case.values()) / len(per_case)
            history.append({"epoch": epoch, "train_loss": sum(losses) / len(losses), "val_acc": val,
                            "time_s": meter.epoch_times[-1]})
            logger.epoch(stage.name, epoch, {**{k: v for k, v in history[-1].items() if k != "epoch"}, "lr": lr,
                                             **{f"val_{case}": acc for case, acc in per_case.items()}})
            bar.set_postfix(loss=f"{history[-1]['train_loss']:.3f}", val=f"{val:.3f}")
            if val > best_val:
                best_val, best_epoch, best_state = val, epoch, _trainable_state(stage)
            if stage.recipe.averaged(epoch):
                average.add(_trainable_state(stage))
            if checkpoint_path is not None and distributed.is_main():
                save_checkpoint(checkpoint_path, {
                    "trainable": _trainable_state(stage), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "history": history, "best_val": best_val,
                    "best_epoch": best_epoch, "best_state": best_state, "epoch": epoch,
                    "epoch_times": meter.epoch_times, "weight_average": average.state(),
                })
        meter.end_training()
    finally:
        if caches:
            for cache in caches:
                cache.close()
            _place_encoders(stage, device)
    averaged = None
    if stage.recipe.averages:  # CAV-MAE: the averaged weights replace the best epoch's
        if not average.count:
            raise ValueError(f"{stage.name}: trainer.wa_start..wa_end ({stage.recipe.wa_start}..{stage.recipe.wa_end})"
                             f" holds none of its {stage.epochs} epochs; set them within 1..{stage.epochs}")
        _load_trainable(stage, average.mean())
        per_case = _validate(stage, feed, trainer.eval_batch_size, device, autocast, None)
        averaged = {"epochs": [stage.recipe.wa_start, stage.recipe.wa_end], "count": average.count,
                    "val_acc": sum(per_case.values()) / len(per_case)}
    elif best_state is not None:
        _load_trainable(stage, best_state)
    return FitResult(best_epoch, best_val, history, meter.summary(), averaged)


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


def _build_caches(stage: Stage, feed: Feed, trainer, device: torch.device, seed: int, autocast,
                  meter: ResourceMeter) -> tuple[TokenCache, TokenCache]:
    """Encoder outputs of ``cache_views`` corrupted views of every training sample (view ``v`` of sample ``i``
    = the draws of (seed, v, i)), and of the validation set under each training case. Afterwards the frozen
    encoders leave the accelerator: the cached stage trains without them."""
    started = time.perf_counter()
    model, n, bs = stage.model, len(feed.train), trainer.eval_batch_size
    model.eval()
    with torch.inference_mode():
        audio, visual = feed.train.sample(0)
        with autocast():
            a, v = model.encode(audio[None].to(device), visual[None].to(device))
    dtype = cache_dtype(feed.cache_dtype, device)
    budget = feed.cache_device_gb * 2**30
    folder = feed.token_dir or Path(".")
    views = TokenCache(n * stage.cache_views, a.shape[1:], v.shape[1:], dtype, device, budget,
                       folder / f"tokens_{stage.name}_train")
    def progress(loader, what: str):
        return tqdm(loader, desc=f"{stage.name}: caching {what}", leave=False, disable=not trainer.progress)

    for view in range(stage.cache_views):
        dataset = TrainSet(feed.train, feed.noise, stage.train_cases, seed, view, feed.augmentation, stream="view",
                           missing_rate=feed.missing_rate)
        encode_into(views, model.encode, progress(feed.options.loader(dataset, bs), f"view {view + 1}"), device,
                    autocast, start=view * n)
    val_set = EvalSet(feed.val, feed.noise, stage.train_cases, SALTS["val"])
    val = TokenCache(len(val_set), a.shape[1:], v.shape[1:], dtype, device,
                     budget - (views.nbytes if views.on_device else 0), folder / f"tokens_{stage.name}_val")
    encode_into(val, model.encode, progress(feed.options.loader(val_set, bs), "validation"), device, autocast)
    _place_encoders(stage, torch.device("cpu"))
    meter.cache = {"views": stage.cache_views, "bytes": views.nbytes, "train": views.describe(),
                   "val": val.describe(), "build_s": round(time.perf_counter() - started, 3)}
    return views, val


def _place_encoders(stage: Stage, device: torch.device) -> None:
    """Move the modality encoders (frozen in a cached stage) to ``device``; no-op on a CPU run."""
    if next(stage.model.head.parameters()).device.type != "cpu":
        stage.model.audio.to(device)
        stage.model.visual.to(device)


def classification_loss(logits: torch.Tensor, targets: torch.Tensor, multi_label: bool) -> torch.Tensor:
    """The training objective. Multi-label data: BCE with logits on (possibly soft) multi-hot targets ``[B, K]``,
    as CAV-MAE trains AudioSet; single-label data: cross-entropy with class indices ``[B]`` (or probabilities)."""
    if multi_label:
        return F.binary_cross_entropy_with_logits(logits.float(), targets.float())
    return F.cross_entropy(logits.float(), targets)


def _train_step(
    stage: Stage, optimizer, scheduler, params, forward: Callable[[], torch.Tensor], labels, weight: float, autocast,
    grad_clip: float, where: str, multi_label: bool = False,
) -> float:
    """One optimisation step on the loss x ``weight`` (1 in one process); returns the (global) loss; raises
    :class:`NonFiniteLossError` before touching the weights on a NaN/inf loss."""
    with autocast():
        logits = forward()
        loss = classification_loss(logits, labels, multi_label)
        if stage.orthogonality and stage.bank is not None:
            loss = loss + stage.orthogonality * stage.bank.orthogonality_penalty()
    return optimizer_step(loss * weight, optimizer, scheduler, params, grad_clip, stage.name, where)


def _validate(stage: Stage, feed: Feed, batch_size: int, device, autocast, tokens: TokenCache | None
              ) -> dict[str, float]:
    """Validation accuracy (multi-label data: mAP) per training case of the stage, in its first eval mode."""
    mode, cases = stage.eval_modes[0], list(stage.train_cases)
    if tokens is not None:
        accs = score(stage, tokens.batches(range(tokens.rows), batch_size, feed.options), cases, [mode], device,
                     autocast, encoded=True).values[mode]
    else:
        accs = evaluate_split(stage, feed.val, feed.noise, SALTS["val"], [mode], device, batch_size, autocast,
                              feed.options, cases).values[mode]
    return accs


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


def freeze_for_prompts(model: AVClassifier, train_head: bool) -> AVClassifier:
    """A copy of ``model`` with every weight frozen except (optionally) the classifier head."""
    frozen = copy.deepcopy(model)
    for p in frozen.parameters():
        p.requires_grad_(False)
    if train_head:
        for p in frozen.head.parameters():
            p.requires_grad_(True)
    return frozen
