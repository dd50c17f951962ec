"""The frozen base's encoder outputs of the validation and test splits under every evaluation case, computed once
per job and shared by every stage that sees them unchanged (:attr:`uvav.train.stage.Stage.shares_encodings`: FT's
own evaluation, the head-only baseline, attention-level prompts).

A split is encoded when a stage first needs it (to be scored, or to copy its cached validation set from), by that
stage's encoders (which are the base's: the rule says so), in the batches streaming evaluation uses
(``trainer.eval_batch_size``, under the job's autocast), and kept in the dtype the encoders return; each stage then
classifies the same batches, so its scores equal streaming's bit for bit. Stages that differ from the base only in
their heads (:attr:`uvav.train.stage.Stage.shares_features`: FT itself, the head-only baseline) are scored from the
base's pooled features, computed once per split in the same batches, so each head reads what the full pass would
have given it. The outputs live on the accelerator when they fit in ``budget_bytes``, else in memory-mapped files
(:class:`uvav.train.token_cache.TokenCache`): host memory holds a few batches, never a split. With a ``store``
(:class:`uvav.train.encoding_store.EncodingStore`) they are kept for the next job on the same base.
"""

from __future__ import annotations

import math
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
    first use, and the base's pooled features of them for the stages that differ from it only in their heads
    (:attr:`uvav.train.stage.Stage.shares_features`); ``encode_s``: seconds spent encoding each split."""

    def __init__(self, splits: Mapping[str, AVSplit], noise: NoiseConfig, device: torch.device, batch_size: int,
                 autocast, options: LoaderOptions, folder: Path, budget_bytes: float = 0.0,
                 progress: bool = False, store: EncodingStore | None = None, base: dict | None = None) -> None:
        self.splits, self.noise, self.device, self.batch_size = splits, noise, device, batch_size
        self.autocast, self.options, self.folder, self.budget_bytes = autocast, options, Path(folder), budget_bytes
        self.progress = progress
        self.store, self.base = store, base  # kept across jobs under the frozen base's key (else the job's own)
        self.caches: dict[str, TokenCache] = {}
        self.pooled: dict[str, torch.Tensor] = {}  # split -> [rows, (V,) D], in a file (host) or on the device
        self.encode_s: dict[str, float] = {}

    def tokens(self, model: AVClassifier, split: str) -> TokenCache:
        """The encoder outputs of ``split`` under every case (encoded now by ``model``'s encoders, the base's, when
        absent); row ``k`` is sample ``k // C`` under case ``EVAL_CASES[k % C]`` (:class:`EvalSet`'s items)."""
        return self.caches.get(split) or self._encode(model, split)

    def evaluate(self, stage: Stage, split: str) -> Scores:
        """:class:`Scores` of ``stage`` (one that shares the base's encodings) on ``split`` under every case, from
        the pooled features when it shares them too (each batch's head reads the rows the full pass would pool)."""
        if not stage.shares_encodings:
            raise ValueError(f"stage {stage.name} does not share the frozen base's encoder outputs")
        cache = self.tokens(stage.model, split)
        if stage.shares_features:
            pooled = self.pooled.get(split)
            if pooled is None:
                pooled = self.pooled[split] = self._pool(stage.model, split, cache)
            batches = ((pooled[i:i + self.batch_size], None, *(t[i:i + self.batch_size] for t in cache.row_info()))
                       for i in range(0, cache.rows, self.batch_size))
            return score(stage, batches, list(EVAL_CASES), stage.eval_modes, self.device, self.autocast, pooled=True)
        batches = self._progress(cache.batches(range(cache.rows), self.batch_size, self.options, as_stored=True),
                                 f"{stage.name}: scoring {split}", cache.rows)
        return score(stage, batches, list(EVAL_CASES), stage.eval_modes, self.device, self.autocast, encoded=True)

    def _progress(self, batches, what: str, rows: int):
        """``batches`` behind a progress bar (when the job shows progress)."""
        return tqdm(batches, desc=what, total=math.ceil(rows / self.batch_size), leave=False, disable=not self.progress)

    @torch.inference_mode()
    def _pool(self, model: AVClassifier, split: str, cache: TokenCache) -> torch.Tensor:
        """The base's pooled features of every row of ``cache``, in the batches scoring reads."""
        model.eval()
        pooled, start = None, 0
        batches = cache.batches(range(cache.rows), self.batch_size, self.options, as_stored=True)
        for audio, visual, *_ in self._progress(batches, f"pooling {split}", cache.rows):
            with self.autocast():
                frames = [model.pool_encoded(audio, v) for v in (visual.unbind(1) if visual.dim() == 4 else (visual,))]
            features = torch.stack(frames, 1) if visual.dim() == 4 else frames[0]
            if pooled is None:
                shape = (cache.rows, *features.shape[1:])
                self.folder.mkdir(parents=True, exist_ok=True)
                pooled = (torch.empty(shape, dtype=features.dtype, device=self.device) if cache.on_device else
                          torch.from_file(str(self.folder / f"pooled_{split}.bin"), shared=True,
                                          size=math.prod(shape), dtype=features.dtype).view(shape))
            pooled[start:start + features.shape[0]] = features.to(pooled.device)
            start += features.shape[0]
        return pooled

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
        loader = self._progress(self.options.loader(dataset, self.batch_size), f"encoding {split}", len(dataset))
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
        """Free every split's encoder outputs and pooled features (device memory, or the files)."""
        for cache in self.caches.values():
            cache.close()
        self.caches.clear()
        self.pooled.clear()
        for path in self.folder.glob("pooled_*.bin"):
            path.unlink()

