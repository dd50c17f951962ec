"""Accuracy of a stage under every case and prompt mode, streamed batch by batch.

Each batch is scored in every requested prompt mode; when the stage's encoders are frozen (no gradient and no
input-level prompt can change their outputs) the batch is encoded once and every mode reuses the tokens.
Batches come from :class:`uvav.data.loading.EvalSet` (raw features) or a
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
        audio, visual = audio.to(device, non_blocking=True), visual.to(device, non_blocking=True)
        total += torch.bincount(positions, minlength=len(cases))
        with autocast():
            query = None if encoded else stage.query(audio, visual)
            if reuse and not encoded:
                audio, visual = stage.model.encode(audio, visual)
            for mode in modes:
                keep = allowed[mode][positions]
                if not keep.any():
                    continue
                kept = keep.to(device)
                a, v, ids, q = (audio, visual, case_ids, query) if keep.all() else (
                    audio[kept], visual[kept], case_ids[keep], None if query is None else query[kept])
                prompts = stage.select(mode, a.shape[0], ids, q)
                logits = (stage.model.classify_encoded(a, v, prompts) if reuse
                          else stage.model(a, v, prompts))
                hit = (logits.argmax(dim=1).cpu() == labels[keep]).long()
                correct[mode] += torch.bincount(positions[keep], weights=hit, minlength=len(cases)).long()
    for counts in (total, *correct.values()):  # a distributed job's ranks each scored a shard
        distributed.sum_(counts)
    return {m: {c: int(correct[m][j]) / max(1, int(total[j])) for j, c in enumerate(cases) if allowed[m][j]}
            for m in modes}


def evaluate_split(stage: Stage, split: AVSplit, noise: NoiseConfig, salt: int, modes: Sequence[str],
                   device: torch.device, batch_size: int, autocast, options: LoaderOptions,
                   cases: Sequence[str] = EVAL_CASES) -> dict[str, dict[str, float]]:
    """Stream ``split`` under each of ``cases`` and score every mode (the final test and validation numbers); in a
    distributed job each rank streams its shard and the counts are summed."""
    dataset = EvalSet(split, noise, cases, salt)
    order = distributed.shard(range(len(dataset))) if distributed.world_size() > 1 else None
    loader = options.loader(dataset, batch_size, order)
    return score(stage, loader, list(cases), modes, device, autocast)
