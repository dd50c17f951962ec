"""The frozen base's encoder outputs of the validation and test splits under every evaluation case, computed once
per job and shared by every stage that sees them unchanged (:attr:`uvav.train.stage.Stage.shares_encodings`: FT's
own evaluation, the head-only baseline, attention-level prompts).

A split is encoded when a stage is first scored on it, by that stage's encoders (which are the base's: the rule
says so), in the batches streaming evaluation uses (``trainer.eval_batch_size``, under the job's autocast), and kept
in the dtype the encoders return; each stage then classifies the same batches, so its scores equal streaming's
bit for bit. The outputs live on the accelerator when they fit in ``budget_bytes``, else in memory-mapped files
(:class:`uvav.train.token_cache.TokenCache`): host memory holds a few batches, never a split. With a ``store``
(:class:`uvav.train.encoding_store.EncodingStore`) they are kept for the next job on the same base.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from uvav.cases import EVAL_CASES
from uvav.config import NoiseConfig
from uvav.data.base import AVSplit
from uvav.data.loading import EvalSet, LoaderOptions
from uvav.models.classifier import AVClassifier
from uvav.train.scoring import SALTS, Scores, score
from uvav.train.stage import Stage
from uvav.train.token_cache import TokenCache
from uvav.train.unique import UniqueEncoder

if TYPE_CHECKING:
    from uvav.train.encoding_store import EncodingStore


class SharedEncodings:
    """Encoder outputs of ``splits`` (``{"val": ..., "test": ...}``) under :data:`uvav.cases.EVAL_CASES`, made on
    first use; ``encode_s``: seconds spent encoding each split."""

    def __init__(self, splits: Mapping[str, AVSplit], noise: NoiseConfig, device: torch.device, batch_size: int,
                 autocast, options: LoaderOptions, folder: Path, budget_bytes: float = 0.0,
                 progress: bool = False, store: EncodingStore | None = None, base: dict | None = None) -> None:
        self.splits, self.noise, self.device, self.batch_size = splits, noise, device, batch_size
        self.autocast, self.options, self.folder, self.budget_bytes = autocast, options, Path(folder), budget_bytes
        self.progress = progress
        self.store, self.base = store, base  # kept across jobs under the frozen base's key (else the job's own)
        self.caches: dict[str, TokenCache] = {}
        self.encode_s: dict[str, float] = {}

    def evaluate(self, stage: Stage, split: str) -> Scores:
        """:class:`Scores` of ``stage`` (one that shares the base's encodings) on ``split`` under every case."""
        if not stage.shares_encodings:
            raise ValueError(f"stage {stage.name} does not share the frozen base's encoder outputs")
        cache = self.caches.get(split) or self._encode(stage.model, split)
        batches = cache.batches(range(cache.rows), self.batch_size, self.options, as_stored=True)
        return score(stage, batches, list(EVAL_CASES), stage.eval_modes, self.device, self.autocast, encoded=True)

    def _encode(self, model: AVClassifier, split: str) -> TokenCache:
        started = time.perf_counter()
        used = sum(c.nbytes for c in self.caches.values() if c.on_device)
        if self.store is None:
            cache = self._compute(model, split, self.folder / f"encodings_{split}", self.budget_bytes - used)
        else:
            spec = {**self.base, "what": f"{split} under every case", "cases": list(EVAL_CASES),
                    "salt": SALTS[split], "batch_size": self.batch_size}
            (cache,), _ = self.store.get(spec, lambda folder: [self._compute(model, split, folder / split, 0.0)],
                                         self.device, self.budget_bytes - used)
        self.caches[split] = cache
        self.encode_s[split] = time.perf_counter() - started
        return cache

    @torch.inference_mode()
    def _compute(self, model: AVClassifier, split: str, folder: Path, budget_bytes: float) -> TokenCache:
        model.eval()
        dataset = EvalSet(self.splits[split], self.noise, EVAL_CASES, SALTS[split])
        loader = tqdm(self.options.loader(dataset, self.batch_size), desc=f"encoding {split}", leave=False,
                      disable=not self.progress)
        cache, start, encoder = None, 0, UniqueEncoder(model)
        for audio, visual, labels, case_ids, positions in loader:
            with self.autocast():
                a, v = encoder.encode(start, audio, visual, self.device)
            if cache is None:
                if a.dtype != v.dtype:
                    raise TypeError(f"audio and visual encoder outputs differ in dtype ({a.dtype}, {v.dtype})")
                cache = encoder.cache = TokenCache(len(dataset), a.shape[1:], v.shape[1:], a.dtype, self.device,
                                                   budget_bytes, folder)
            cache.write(start, a, v, labels, case_ids, positions)
            start += a.shape[0]
        return cache

    def close(self) -> None:
        """Free every split's encoder outputs (device memory, or the files)."""
        for cache in self.caches.values():
            cache.close()
        self.caches.clear()

