"""Training loops and evaluation under every case.

One loop serves every stage. What differs between FT, the head-only baseline and PL is a :class:`Stage`:
which parameters train, which prompt mode the forward pass uses, and which cases the batches are drawn from.
Every training sample gets a case drawn uniformly from the stage's training cases and is corrupted
accordingly (fresh draws every step); validation and test sets are corrupted once, deterministically.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from uvav.config import CASES, EVAL_CASES
from uvav.data.base import AVSplit
from uvav.models.classifier import AVClassifier
from uvav.models.prompts import PromptBank
from uvav.outputs import atomic_torch_save
from uvav.resources import ResourceMeter
from uvav.scenarios import Noise, augment, case_ids_for, corrupt, corrupt_split

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass
class Stage:
    """What one training stage optimises and how its forward pass picks prompts.

    ``mode``: ``none`` (no prompts), ``oracle`` (each sample its own case's prompt set) or ``uncertain``
    (all sets). ``eval_modes``: modes to validate with; the first is the model-selection metric.
    """

    name: str
    model: AVClassifier
    bank: PromptBank | None
    train_mode: str
    eval_modes: list[str]
    train_cases: list[str]
    epochs: int
    lr: float
    weight_decay: float
    cache_views: int = 0  # > 0: precompute this many corrupted views of the frozen encoders' outputs
    orthogonality: float = 0.0  # weight of the prompt sets' orthogonality penalty in the loss

    def trainable(self) -> list[torch.nn.Parameter]:
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.bank is not None:
            params += [p for p in self.bank.parameters() if p.requires_grad]
        return params

    def modules(self) -> list[torch.nn.Module]:
        return [m for m in (self.model, self.bank) if m is not None]

    def encoders_frozen(self) -> bool:
        """True when no gradient has to pass through the modality encoders."""
        encoder_params = [*self.model.audio.parameters(), *self.model.visual.parameters()]
        input_prompts = self.bank is not None and self.bank.input_audio is not None
        return not input_prompts and not any(p.requires_grad for p in encoder_params)

    def select(self, mode: str, batch: int, case_ids: torch.Tensor):
        return None if mode == "none" else self.bank.select(mode, batch, case_ids)


def logits_for(
    stage: Stage, audio: torch.Tensor, visual: torch.Tensor, case_ids: torch.Tensor, mode: str
) -> torch.Tensor:
    """Forward pass; the encoders run without autograd when no gradient has to pass through them."""
    prompts = stage.select(mode, audio.shape[0], case_ids)
    if stage.encoders_frozen():
        with torch.no_grad():
            a, v = stage.model.encode(audio, visual, prompts)
        return stage.model.classify_encoded(a, v, prompts)
    return stage.model(audio, visual, prompts)


def classify_tokens(stage: Stage, tokens_a, tokens_v, case_ids: torch.Tensor, mode: str) -> torch.Tensor:
    """Logits from (cached) encoder outputs: fusion with this mode's prompts, shared blocks, head."""
    return stage.model.classify_encoded(tokens_a, tokens_v, stage.select(mode, tokens_a.shape[0], case_ids))


@torch.inference_mode()
def encode_frozen(
    model: AVClassifier, audio: torch.Tensor, visual: torch.Tensor, device: torch.device, batch_size: int,
    autocast: Callable[[], Any],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Outputs of the (frozen) modality encoders for a whole split, in batches, kept on ``device``."""
    model.eval()
    parts_a, parts_v = [], []
    for start in range(0, audio.shape[0], batch_size):
        sl = slice(start, start + batch_size)
        with autocast():
            a, v = model.encode(audio[sl].to(device), visual[sl].to(device))
        parts_a.append(a.float())
        parts_v.append(v.float())
    return torch.cat(parts_a).clone(), torch.cat(parts_v).clone()  # clone: leave inference mode's tensors


@dataclass
class EvalSets:
    """Deterministically corrupted copies of a split, one per case, made once and reused; for stages whose
    encoders are frozen (and see no input prompts) also their encoder outputs, which no prompt can change."""

    split: AVSplit
    noise: Noise
    salt: int = 0
    _cache: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    _encoded: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    def get(self, case: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if case not in self._cache:
            self._cache[case] = corrupt_split(self.split.audio, self.split.visual, case, self.noise, self.salt)
        return self._cache[case]

    def encoded(self, stage: Stage, case: str, device, batch_size: int, autocast) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder outputs of this case's corrupted split, kept in host memory (not training memory)."""
        key = (id(stage.model), case)
        if key not in self._encoded:
            audio, visual, _ = self.get(case)
            a, v = encode_frozen(stage.model, audio, visual, device, batch_size, autocast)
            self._encoded[key] = (a.cpu(), v.cpu())
        return self._encoded[key]


@torch.inference_mode()
def evaluate(
    stage: Stage, sets: EvalSets, case: str, mode: str, device: torch.device, batch_size: int,
    autocast: Callable[[], Any],
) -> float:
    """Accuracy of ``stage`` on one case in one prompt mode."""
    for module in stage.modules():
        module.eval()
    audio, visual, case_ids = sets.get(case)
    reuse_encoders = stage.encoders_frozen()
    if reuse_encoders:
        tokens_a, tokens_v = sets.encoded(stage, case, device, batch_size, autocast)
    correct = 0
    for start in range(0, len(sets.split), batch_size):
        sl = slice(start, start + batch_size)
        with autocast():
            if reuse_encoders:
                logits = classify_tokens(stage, tokens_a[sl].to(device), tokens_v[sl].to(device), case_ids[sl], mode)
            else:
                logits = logits_for(stage, audio[sl].to(device), visual[sl].to(device), case_ids[sl], mode)
        correct += int((logits.argmax(dim=1).cpu() == sets.split.labels[sl]).sum())
    return correct / max(1, len(sets.split))


@dataclass
class CachedViews:
    """``views`` corrupted copies of the training split, passed once through the frozen encoders.

    Each epoch, every sample uses one of its views at random (case and corruption included), so the
    training corruptions still vary, over ``views`` draws per sample instead of a fresh draw every step.
    """

    audio_tokens: torch.Tensor  # [V, N, Na, D], host memory
    visual_tokens: torch.Tensor  # [V, N, Nv, D], host memory
    case_ids: torch.Tensor  # [V, N]
    device: torch.device

    @classmethod
    def build(cls, stage: Stage, train: AVSplit, noise: Noise, views: int, gen: torch.Generator, device,
              batch_size: int, autocast, augmentation: tuple[int, int, int] = (0, 0, 0)) -> CachedViews:
        tokens_a, tokens_v, cases = [], [], []
        for _ in range(views):
            ids = case_ids_for("mixed", len(train), gen, tuple(stage.train_cases))
            audio, visual = augment(train.audio, train.visual, *augmentation, gen)
            audio, visual = corrupt(audio, visual, ids, noise, gen)
            a, v = encode_frozen(stage.model, audio, visual, device, batch_size, autocast)
            tokens_a.append(a.cpu())
            tokens_v.append(v.cpu())
            cases.append(ids)
        tokens_a, tokens_v = torch.stack(tokens_a), torch.stack(tokens_v)
        if device.type == "cuda":  # kept in host memory (pinned), so it does not count as training memory
            tokens_a, tokens_v = tokens_a.pin_memory(), tokens_v.pin_memory()
        return cls(tokens_a, tokens_v, torch.stack(cases), device)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.audio_tokens, self.visual_tokens, self.case_ids))

    def batch(self, index: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One random view per sample of ``index``: (audio tokens, visual tokens) on the device, case ids."""
        view = torch.randint(0, self.case_ids.shape[0], (index.numel(),), generator=gen)
        move = {"device": self.device, "non_blocking": True}
        return (self.audio_tokens[view, index].to(**move), self.visual_tokens[view, index].to(**move),
                self.case_ids[view, index])


def oracle_available(stage: Stage, case: str) -> bool:
    cases = CASES if case == "mixed" else (case,)
    return stage.bank is not None and all(c in stage.bank.cases for c in cases)


def evaluate_all(
    stage: Stage, sets: EvalSets, device: torch.device, batch_size: int, autocast, modes: list[str]
) -> dict[str, dict[str, float]]:
    """``{mode: {case: accuracy}}`` over every evaluation case; oracle only where every case has a prompt set."""
    results: dict[str, dict[str, float]] = {}
    for mode in modes:
        results[mode] = {
            case: evaluate(stage, sets, case, mode, device, batch_size, autocast)
            for case in EVAL_CASES
            if mode != "oracle" or oracle_available(stage, case)
        }
    return results


@dataclass
class FitResult:
    best_epoch: int
    best_val: float
    history: list[dict[str, float]]
    resources: dict[str, Any]


def _lr_lambda(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def fit(
    stage: Stage, train: AVSplit, val_sets: EvalSets, noise: Noise, trainer, device: torch.device,
    seed: int, autocast, checkpoint_path: Path | None = None, augmentation: tuple[int, int, int] = (0, 0, 0),
) -> FitResult:
    """Train ``stage`` and keep the weights of the epoch with the best validation accuracy (mean over the
    stage's training cases, first eval mode). Writes a resumable checkpoint after every epoch when
    ``checkpoint_path`` is given, and resumes from it when it exists. ``augmentation`` = (freq_mask, time_mask,
    image_shift) is applied to training batches before their corruption."""
    params = stage.trainable()
    optimizer = torch.optim.AdamW(params, lr=stage.lr, weight_decay=stage.weight_decay)
    steps_per_epoch = math.ceil(len(train) / trainer.batch_size)
    total = steps_per_epoch * stage.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(total, max(1, int(trainer.warmup_epochs * steps_per_epoch)))
    )
    gen = torch.Generator().manual_seed(seed)
    meter = ResourceMeter(device)
    history: list[dict[str, float]] = []
    best_val, best_epoch, best_state = -1.0, -1, None
    start_epoch = 0
    if checkpoint_path is not None and checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        _load_trainable(stage, state["trainable"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        gen.set_state(state["generator"])
        history, best_val, best_epoch = state["history"], state["best_val"], state["best_epoch"]
        best_state, start_epoch = state["best_state"], state["epoch"] + 1
        meter.epoch_times = list(state["epoch_times"])
        log.info("%s: resumed from %s at epoch %d", stage.name, checkpoint_path, start_epoch)

    cache = None
    if stage.cache_views > 0 and stage.encoders_frozen():
        started = time.perf_counter()
        cache = CachedViews.build(stage, train, noise, stage.cache_views, torch.Generator().manual_seed(seed + 7),
                                  device, trainer.eval_batch_size, autocast, augmentation)
        meter.cache = {"views": stage.cache_views, "bytes": cache.nbytes,
                       "build_s": round(time.perf_counter() - started, 3)}
    meter.begin_training()
    cases = tuple(stage.train_cases)
    bar = tqdm(range(start_epoch, stage.epochs), desc=stage.name, disable=not trainer.progress,
               initial=start_epoch, total=stage.epochs)
    for epoch in bar:
        for module in stage.modules():
            module.train()
        order = torch.randperm(len(train), generator=gen)
        losses: list[float] = []
        with meter.epoch():
            for step in tqdm(range(steps_per_epoch), desc=f"epoch {epoch}", leave=False,
                             disable=not trainer.progress):
                index = order[step * trainer.batch_size:(step + 1) * trainer.batch_size]
                if cache is not None:
                    tokens_a, tokens_v, case_ids = cache.batch(index, gen)
                    inputs = (tokens_a, tokens_v)
                    forward = functools.partial(classify_tokens, stage, tokens_a, tokens_v, case_ids, stage.train_mode)
                else:
                    case_ids = case_ids_for("mixed", index.numel(), gen, cases)
                    inputs = augment(train.audio[index], train.visual[index], *augmentation, gen)
                    inputs = corrupt(*inputs, case_ids, noise, gen)
                    forward = functools.partial(logits_for, stage, inputs[0].to(device), inputs[1].to(device),
                                                case_ids, stage.train_mode)
                train_step = functools.partial(
                    _train_step, stage, optimizer, scheduler, params, forward, train.labels[index].to(device),
                    autocast, trainer.grad_clip, f"epoch {epoch}, step {step}; last good checkpoint: {checkpoint_path}",
                )
                if meter.wants_step_measurement(epoch, step, stage.epochs):
                    losses.append(meter.measure_step(train_step, stage.modules(), optimizer, inputs))
                else:
                    losses.append(train_step())
        val = _validate(stage, val_sets, device, trainer.eval_batch_size, autocast)
        history.append({"epoch": epoch, "train_loss": sum(losses) / len(losses), "val_acc": val,
                        "time_s": meter.epoch_times[-1]})
        bar.set_postfix(loss=f"{history[-1]['train_loss']:.3f}", val=f"{val:.3f}")
        if val > best_val:
            best_val, best_epoch, best_state = val, epoch, _trainable_state(stage)
        if checkpoint_path is not None:
            atomic_torch_save(checkpoint_path, {
                "trainable": _trainable_state(stage), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "generator": gen.get_state(), "history": history,
                "best_val": best_val, "best_epoch": best_epoch, "best_state": best_state, "epoch": epoch,
                "epoch_times": meter.epoch_times,
            })
    meter.end_training()
    if best_state is not None:
        _load_trainable(stage, best_state)
    return FitResult(best_epoch, best_val, history, meter.summary())


def _train_step(
    stage: Stage, optimizer, scheduler, params, forward: Callable[[], torch.Tensor], labels, autocast,
    grad_clip: float, where: str,
) -> float:
    """One optimisation step; raises :class:`NonFiniteLossError` before touching the weights on a NaN/inf loss."""
    with autocast():
        logits = forward()
        loss = F.cross_entropy(logits.float(), labels)
        if stage.orthogonality and stage.bank is not None:
            loss = loss + stage.orthogonality * stage.bank.orthogonality_penalty()
    if not torch.isfinite(loss):
        raise NonFiniteLossError(f"{stage.name}: loss is {loss.item()} at {where}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    scheduler.step()
    return loss.item()


def _validate(stage: Stage, sets: EvalSets, device, batch_size: int, autocast) -> float:
    mode = stage.eval_modes[0]
    accs = [evaluate(stage, sets, case, mode, device, batch_size, autocast) for case in stage.train_cases]
    return sum(accs) / len(accs)


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
