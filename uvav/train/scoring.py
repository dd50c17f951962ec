"""Accuracy (single-label data) or mAP (multi-label data) of a stage under every case and prompt mode, streamed
batch by batch.

Multi-label data (``labels`` multi-hot ``[N, K]``, e.g. AudioSet) is scored as CAV-MAE scores it
(``src/utilities/stats.py``): scikit-learn's average precision of each class on the sigmoid outputs, mAP = the
mean over all classes; a class without a positive sample in the evaluated set scores AP 0 (scikit-learn's value)
and counts in the mean, as in CAV-MAE.

Each batch is scored in every requested prompt mode; when the stage's encoders are frozen (no gradient and no
input-level prompt can change their outputs) the batch is encoded once and every mode reuses the tokens.
Batches come from :class:`uvav.data.loading.EvalSet` (raw features; images ``[B, V, 3, H, W]`` when a split
evaluates every frame of a clip: the frames' predictions are averaged, :func:`average_frame_logits`) or a
:class:`uvav.train.token_cache.TokenCache` of encoder outputs (validation of a frozen stage).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from uvav import distributed
from uvav.cases import ACCURACY, CASES, EVAL_CASES, MAP, NO_PROMPTS
from uvav.config import NoiseConfig
from uvav.data.base import AVSplit
from uvav.data.loading import EvalSet, LoaderOptions
from uvav.train.stage import Stage

SALTS = {"test": 0, "val": 1}  # evaluation draws differ between the splits


def metric_name(multi_label: bool) -> str:
    """The name of the metric a run on such data reports (``metrics.json``'s ``metric``)."""
    return MAP if multi_label else ACCURACY


@dataclass
class Scores:
    """A stage's scores: ``values[mode][case]`` (accuracy or mAP, see ``metric``) and, for multi-label data,
    ``per_class[mode][case]`` (the average precision of each class, in class order)."""

    values: dict[str, dict[str, float]]
    metric: str = ACCURACY
    per_class: dict[str, dict[str, list[float]]] = field(default_factory=dict)


def average_precisions(targets: torch.Tensor, probabilities: torch.Tensor) -> tuple[float, list[float]]:
    """CAV-MAE's mAP and the per-class APs of multi-hot ``targets [N, K]`` and scores ``[N, K]``: scikit-learn's
    average precision per class; a class without positives gets AP 0 and counts in the mean (as in CAV-MAE)."""
    from sklearn.metrics import average_precision_score  # multi-label jobs only: it costs a job ~1 s to import

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No positive class found", category=UserWarning)
        per_class = np.atleast_1d(average_precision_score(targets.numpy(), probabilities.numpy(), average=None))
    return float(np.mean(per_class)), [float(ap) for ap in per_class]


def _gathered(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` (rows) concatenated over the ranks of a distributed job (each scored a shard)."""
    if distributed.world_size() == 1:
        return tensor
    parts: list[torch.Tensor | None] = [None] * distributed.world_size()
    torch.distributed.all_gather_object(parts, tensor)
    return torch.cat([part for part in parts if part.shape[0]] or parts[:1])  # a rank without rows adds none


def _multi_label_scores(outputs: dict[str, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]],
                        cases: Sequence[str], allowed: dict[str, torch.Tensor]) -> Scores:
    """mAP and per-class AP per mode and case from each mode's ``(probabilities, targets, positions)`` batches."""
    values: dict[str, dict[str, float]] = {}
    per_class: dict[str, dict[str, list[float]]] = {}
    for mode, batches in outputs.items():
        values[mode], per_class[mode] = {}, {}
        local = [torch.cat(part) for part in zip(*batches, strict=True)] if batches else [
            torch.zeros(0, 0), torch.zeros(0, 0), torch.zeros(0, dtype=torch.long)]  # every rank gathers, even empty
        probabilities, targets, positions = (_gathered(part) for part in local)
        for j, case in enumerate(cases):
            if allowed[mode][j]:
                rows = positions == j
                values[mode][case], per_class[mode][case] = average_precisions(targets[rows], probabilities[rows])
    return Scores(values, MAP, per_class)


def oracle_available(stage: Stage, case: str) -> bool:
    """Oracle prompts exist for ``case`` (for ``mixed``: for every case)."""
    cases = CASES if case == "mixed" else (case,)
    return stage.bank is not None and all(c in stage.bank.cases for c in cases)


def scored_cases(stage: Stage, mode: str, cases: Sequence[str]) -> list[str]:
    """The cases a mode can be scored on: every case, but oracle only where the bank has the sets."""
    return [c for c in cases if mode != "oracle" or oracle_available(stage, c)]


@torch.inference_mode()
def score(stage: Stage, batches: Iterable[Sequence[torch.Tensor]], cases: Sequence[str], modes: Sequence[str],
          device: torch.device, autocast, encoded: bool = False, pooled: bool = False) -> Scores:
    """:class:`Scores` (``values[mode][case]``) over ``batches`` of ``(audio, visual, labels, case_ids,
    positions)`` (``positions`` index ``cases``); ``encoded``: the first two are encoder outputs already;
    ``pooled``: the first is the pooled features the head reads (``[B, D]``, or ``[B, V, D]`` for every frame of a
    clip), the second is None. Class-index labels are scored in accuracy, multi-hot labels in mAP (with per-class
    AP)."""
    if pooled and (stage.bank is not None or tuple(modes) != NO_PROMPTS):
        raise ValueError(f"stage {stage.name}: pooled features are scored without prompts")
    for module in stage.modules():
        module.eval()
    allowed = {m: torch.tensor([c in scored_cases(stage, m, cases) for c in cases]) for m in modes}
    correct = {m: torch.zeros(len(cases), dtype=torch.long) for m in modes}
    total = torch.zeros(len(cases), dtype=torch.long)
    # multi-label: every (score, target) is kept to rank, float32 scores and bool targets: 5 bytes per sample, class
    # and case (AudioSet's 20k evaluation clips x 527 classes x 5 cases: 264 MB per mode)
    outputs: dict[str, list[tuple[torch.Tensor, ...]]] = {m: [] for m in modes}
    multi_label = False
    reuse = encoded or stage.encoders_frozen()
    for audio, visual, labels, case_ids, positions in batches:
        total += torch.bincount(positions, minlength=len(cases))
        multi_label = labels.dim() == 2
        if pooled:  # [B, (V,) D]
            with autocast():
                per_frame = [{modes[0]: stage.model.head(p.to(device, non_blocking=True))}
                             for p in (audio.unbind(1) if audio.dim() == 3 else (audio,))]
        else:  # [B, V, 3, H, W] (encoded: [B, V, N, D]): every frame of a clip
            frames = visual.unbind(1) if visual.dim() == (4 if encoded else 5) else (visual,)
            per_frame = [_mode_logits(stage, audio.to(device, non_blocking=True), v.to(device, non_blocking=True),
                                      case_ids, positions, modes, allowed, encoded, reuse, autocast) for v in frames]
        for mode in per_frame[0]:
            keep = allowed[mode][positions]
            logits = average_frame_logits([p[mode] for p in per_frame], multi_label)
            if multi_label:
                outputs[mode].append((logits.float().sigmoid().cpu(), labels[keep].bool(), positions[keep]))
                continue
            hit = (logits.argmax(dim=1).cpu() == labels[keep]).long()
            correct[mode] += torch.bincount(positions[keep], weights=hit, minlength=len(cases)).long()
    if distributed.world_size() > 1:  # one rank may have seen no batch: every rank takes the data's kind from all
        flag = torch.tensor([int(multi_label)])
        multi_label = bool(distributed.sum_(flag).item())
    if multi_label:
        return _multi_label_scores(outputs, cases, allowed)
    for counts in (total, *correct.values()):  # a distributed job's ranks each scored a shard
        distributed.sum_(counts)
    return Scores({m: {c: int(correct[m][j]) / max(1, int(total[j])) for j, c in enumerate(cases) if allowed[m][j]}
                   for m in modes})


def _mode_logits(stage: Stage, audio: torch.Tensor, visual: torch.Tensor, case_ids: torch.Tensor,
                 positions: torch.Tensor, modes: Sequence[str], allowed: dict[str, torch.Tensor], encoded: bool,
                 reuse: bool, autocast) -> dict[str, torch.Tensor]:
    """``{mode: logits}`` of one batch (one frame per clip), over the samples each mode scores."""
    out = {}
    with autocast():
        query = None if encoded else stage.query(audio, visual)
        if reuse and not encoded:
            audio, visual = stage.model.encode(audio, visual)
        for mode in modes:
            keep = allowed[mode][positions]
            if not keep.any():
                continue
            kept = keep.to(audio.device)
            a, v, ids, q = (audio, visual, case_ids, query) if keep.all() else (
                audio[kept], visual[kept], case_ids[keep], None if query is None else query[kept])
            prompts = stage.select(mode, a.shape[0], ids, q)
            out[mode] = (stage.model.classify_encoded(a, v, prompts) if reuse else stage.model(a, v, prompts))
    return out


def average_frame_logits(logits: Sequence[torch.Tensor], multi_label: bool) -> torch.Tensor:
    """Scores of a clip from its frames' ``logits`` (CAV-MAE's multi-frame evaluation): the mean of the frames'
    probabilities (softmax; sigmoid when ``multi_label``), returned as logits of that mean (its log, or its
    log-odds), so that argmax, softmax or sigmoid of the result read the averaged prediction."""
    if len(logits) == 1:
        return logits[0]
    stacked = torch.stack([x.float() for x in logits])
    if multi_label:
        p = torch.sigmoid(stacked).mean(dim=0).clamp(1e-7, 1 - 1e-7)
        return torch.log(p) - torch.log1p(-p)
    return torch.log(torch.softmax(stacked, dim=-1).mean(dim=0))


def evaluate_split(stage: Stage, split: AVSplit, noise: NoiseConfig, salt: int, modes: Sequence[str],
                   device: torch.device, batch_size: int, autocast, options: LoaderOptions,
                   cases: Sequence[str] = EVAL_CASES, progress: str | None = None) -> Scores:
    """Stream ``split`` under each of ``cases`` and score every mode (the final test and validation numbers); in a
    distributed job each rank streams its shard and the counts are summed. ``progress``: a bar with this label."""
    dataset = EvalSet(split, noise, cases, salt)
    order = distributed.shard(range(len(dataset))) if distributed.world_size() > 1 else None
    loader = options.loader(dataset, batch_size, order)
    if progress:
        loader = tqdm(loader, desc=progress, total=len(loader), leave=False)
    return score(stage, loader, list(cases), modes, device, autocast)
