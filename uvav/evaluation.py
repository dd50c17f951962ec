"""Accuracy of a stage under every case and prompt mode, streamed batch by batch.

Each batch is scored in every requested prompt mode; when the stage's encoders are frozen (no gradient and no
input-level prompt can change their outputs) the batch is encoded once and every mode reuses the tokens.
Batches come from :class:`uvav.data.loading.EvalSet` (raw features; images ``[B, V, 3, H, W]`` when a split
evaluates every frame of a clip: the frames' predictions are averaged, :func:`average_frame_logits`) or a
:class:`uvav.token_cache.TokenCache` of encoder outputs (validation of a frozen stage).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import torch

from uvav import distributed
from uvav.cases import CASES, EVAL_CASES
from uvav.config import NoiseConfig
from uvav.data.base import AVSplit
from uvav.data.loading import EvalSet, LoaderOptions

if TYPE_CHECKING:
    from uvav.train import Stage

SALTS = {"test": 0, "val": 1}  # evaluation draws differ between the splits


def oracle_available(stage: Stage, case: str) -> bool:
    """Oracle prompts exist for ``case`` (for ``mixed``: for every case)."""
    cases = CASES if case == "mixed" else (case,)
    return stage.bank is not None and all(c in stage.bank.cases for c in cases)


def scored_cases(stage: Stage, mode: str, cases: Sequence[str]) -> list[str]:
    """The cases a mode can be scored on: every case, but oracle only where the bank has the sets."""
    return [c for c in cases if mode != "oracle" or oracle_available(stage, c)]


@torch.inference_mode()
def score(stage: Stage, batches: Iterable[Sequence[torch.Tensor]], cases: Sequence[str], modes: Sequence[str],
          device: torch.device, autocast, encoded: bool = False) -> dict[str, dict[str, float]]:
    """``{mode: {case: accuracy}}`` over ``batches`` of ``(audio, visual, labels, case_ids, positions)``
    (``positions`` index ``cases``); ``encoded``: the first two are encoder outputs already."""
    for module in stage.modules():
        module.eval()
    allowed = {m: torch.tensor([c in scored_cases(stage, m, cases) for c in cases]) for m in modes}
    correct = {m: torch.zeros(len(cases), dtype=torch.long) for m in modes}
    total = torch.zeros(len(cases), dtype=torch.long)
    reuse = encoded or stage.encoders_frozen()
    for audio, visual, labels, case_ids, positions in batches:
        total += torch.bincount(positions, minlength=len(cases))
        frames = visual.unbind(1) if visual.dim() == 5 else (visual,)  # [B, V, 3, H, W]: every frame of a clip
        per_frame = [_mode_logits(stage, audio.to(device, non_blocking=True), v.to(device, non_blocking=True),
                                  case_ids, positions, modes, allowed, encoded, reuse, autocast) for v in frames]
        for mode in per_frame[0]:
            keep = allowed[mode][positions]
            logits = average_frame_logits([p[mode] for p in per_frame], labels.dim() == 2)
            hit = (logits.argmax(dim=1).cpu() == labels[keep]).long()
            correct[mode] += torch.bincount(positions[keep], weights=hit, minlength=len(cases)).long()
    for counts in (total, *correct.values()):  # a distributed job's ranks each scored a shard
        distributed.sum_(counts)
    return {m: {c: int(correct[m][j]) / max(1, int(total[j])) for j, c in enumerate(cases) if allowed[m][j]}
            for m in modes}


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
                   cases: Sequence[str] = EVAL_CASES) -> dict[str, dict[str, float]]:
    """Stream ``split`` under each of ``cases`` and score every mode (the final test and validation numbers); in a
    distributed job each rank streams its shard and the counts are summed."""
    dataset = EvalSet(split, noise, cases, salt)
    order = distributed.shard(range(len(dataset))) if distributed.world_size() > 1 else None
    loader = options.loader(dataset, batch_size, order)
    return score(stage, loader, list(cases), modes, device, autocast)
