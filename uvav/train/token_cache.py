"""Frozen-encoder outputs kept for reuse: on the accelerator when they fit, else in a memory-mapped file.

A stage whose modality encoders are frozen (head only, attention-level prompts) sees the same encoder
outputs for the same corrupted sample, so they are computed once: ``method.cached_views`` corrupted views
per training sample, and the validation set under each training case (rows of the job's shared validation
encodings, :mod:`uvav.train.shared`, when it has them). Tokens are stored in bfloat16 (CUDA)
or float16 (CPU), ``method.cache_dtype``. They live on the GPU when they fit in ``method.cache_device_gb``
(no host-to-device copy per step); otherwise in a file under the job's folder, read back in batches by
DataLoader workers into pinned memory, so host memory holds a few batches, never the cache. A job's stages that
share the frozen base's encodings train on one such cache (:class:`SharedViews`).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from uvav.cases import EVAL_CASES
from uvav.data.loading import EvalSet, LoaderOptions, TrainSet
from uvav.resources import ResourceMeter
from uvav.train.scoring import SALTS
from uvav.train.settings import Feed, FitSettings
from uvav.train.stage import Stage
from uvav.train.unique import UniqueEncoder

if TYPE_CHECKING:
    from uvav.train.encoding_store import EncodingStore

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
_NUMPY_STORAGE = {torch.bfloat16: np.int16, torch.float16: np.float16, torch.float32: np.float32}


def cache_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto``: bfloat16 on CUDA (what autocast computes in), float16 elsewhere."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float16
    return DTYPES[name]


class TokenCache:
    """Audio and visual tokens ``[rows, N, D]`` plus per-row ``labels``, ``case_ids`` and ``positions``
    (index of the evaluation case), written in batches and read back by row index."""

    def __init__(self, rows: int, audio_shape: Sequence[int], visual_shape: Sequence[int], dtype: torch.dtype,
                 device: torch.device, budget_bytes: float, folder: Path) -> None:
        self.rows, self.dtype, self.device = rows, dtype, device
        self.shapes = {"audio": (rows, *audio_shape), "visual": (rows, *visual_shape)}
        self.labels = torch.zeros(rows, dtype=torch.long)
        self.case_ids = torch.zeros(rows, dtype=torch.long)
        self.positions = torch.zeros(rows, dtype=torch.long)
        self.on_device = self._fits(device, budget_bytes)
        self.folder = Path(folder)
        self.kept = False  # files that outlive the job (:meth:`keep`)
        self._maps: dict[tuple[str, str], np.memmap] = {}
        if self.on_device:
            self._tensors = {k: torch.empty(s, dtype=dtype, device=device) for k, s in self.shapes.items()}
        else:
            if self.folder.exists():
                shutil.rmtree(self.folder)
            self.folder.mkdir(parents=True)
            for key, shape in self.shapes.items():
                np.lib.format.open_memmap(self._path(key), mode="w+", dtype=_NUMPY_STORAGE[dtype], shape=shape)

    @classmethod
    def open(cls, folder: Path, device: torch.device, budget_bytes: float) -> TokenCache:
        """A cache that :meth:`keep` left in ``folder``: read from its files, or copied to ``device`` when it
        fits in ``budget_bytes`` (as a new cache would be placed)."""
        index = torch.load(Path(folder) / "index.pt", weights_only=True)
        cache = cls.__new__(cls)
        cache.rows, cache.dtype, cache.device = index["rows"], DTYPES[index["dtype"]], device
        cache.folder = Path(folder)
        cache.shapes = {k: tuple(v) for k, v in index["shapes"].items()}
        cache.labels, cache.case_ids, cache.positions = index["labels"], index["case_ids"], index["positions"]
        cache.on_device, cache.kept, cache._maps = cache._fits(device, budget_bytes), True, {}
        if cache.on_device:
            cache._tensors = {k: torch.from_numpy(np.ascontiguousarray(cache._map(k))).view(cache.dtype).to(device)
                              for k in cache.shapes}
            cache._maps.clear()
        return cache

    @property
    def nbytes(self) -> int:
        return sum(int(np.prod(s)) for s in self.shapes.values()) * torch.finfo(self.dtype).bits // 8

    def _fits(self, device: torch.device, budget_bytes: float) -> bool:
        """Whether the tokens go to the accelerator: a CUDA device with room for them in ``budget_bytes``."""
        return device.type == "cuda" and self.nbytes <= budget_bytes

    def keep(self) -> None:
        """Write the row index beside the token files and leave them on :meth:`close` (file-backed only)."""
        if self.on_device:
            raise ValueError("only a file-backed cache can be kept")
        self.flush()
        name = {v: k for k, v in DTYPES.items()}[self.dtype]
        torch.save({"rows": self.rows, "dtype": name, "shapes": {k: list(v) for k, v in self.shapes.items()},
                    "labels": self.labels, "case_ids": self.case_ids, "positions": self.positions},
                   self.folder / "index.pt")
        self.kept = True

    @property
    def where(self) -> str:
        return f"{self.device} memory" if self.on_device else f"memory-mapped files in {self.folder}"

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}.npy"

    def _map(self, key: str, mode: str = "r") -> np.memmap:
        if (key, mode) not in self._maps:
            self._maps[(key, mode)] = np.load(self._path(key), mmap_mode=mode)
        return self._maps[(key, mode)]

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers re-open the files themselves
        return {**self.__dict__, "_maps": {}}

    def write(self, start: int, audio: torch.Tensor, visual: torch.Tensor, labels: torch.Tensor,
              case_ids: torch.Tensor, positions: torch.Tensor) -> None:
        """Rows ``start ..`` from one batch of encoder outputs (any device, any float dtype)."""
        rows = slice(start, start + audio.shape[0])
        if labels.dim() == 2 and self.labels.dim() == 1:  # multi-hot labels [B, K] (multi-label data)
            with torch.inference_mode(False):  # a normal tensor: training reads its rows as loss targets
                self.labels = torch.zeros(self.rows, labels.shape[1], dtype=torch.float32)
        self.labels[rows], self.case_ids[rows], self.positions[rows] = labels.cpu(), case_ids.cpu(), positions.cpu()
        for key, tokens in (("audio", audio), ("visual", visual)):
            tokens = tokens.to(self.dtype)
            if self.on_device:
                self._tensors[key][rows] = tokens.to(self.device)
            else:
                self._map(key, "r+")[rows] = tokens.cpu().view(_torch_storage(self.dtype)).numpy()

    def flush(self) -> None:
        for array in self._maps.values():
            if isinstance(array, np.memmap):
                array.flush()
        self._maps.clear()

    def row_info(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every row's ``labels``, ``case_ids`` and ``positions``."""
        return self.labels, self.case_ids, self.positions

    def read(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Audio and visual tokens of rows ``index`` (host tensors for a file-backed cache)."""
        return self.tokens("audio", index), self.tokens("visual", index)

    def tokens(self, key: str, index: torch.Tensor) -> torch.Tensor:
        """One modality's (``key``: audio or visual) tokens of rows ``index``."""
        if self.on_device:
            return self._tensors[key][index.to(self.device)]
        return torch.from_numpy(np.ascontiguousarray(self._map(key)[np.asarray(index)])).view(self.dtype)

    def batches(self, rows: Sequence[int], batch_size: int, options: LoaderOptions,
                as_stored: bool = False) -> Iterator[tuple[torch.Tensor, ...]]:
        """``(audio, visual, labels, case_ids, positions)`` for ``rows`` in batches; tokens on the device, as
        float32 (autocast casts them to its own dtype where it computes), or with ``as_stored`` in the cache's
        dtype."""
        chunks = [torch.as_tensor(rows[i:i + batch_size], dtype=torch.long) for i in range(0, len(rows), batch_size)]
        dtype = self.dtype if as_stored else torch.float32
        if self.on_device:
            for index in chunks:
                audio, visual = self.read(index)
                yield (audio.to(dtype), visual.to(dtype), self.labels[index], self.case_ids[index],
                       self.positions[index])
            return
        self.flush()
        workers = min(options.workers, len(chunks))
        loader = DataLoader(_Chunks(self, chunks), batch_size=None, num_workers=workers,
                            pin_memory=options.pin_memory, prefetch_factor=options.prefetch_factor if workers else None)
        for audio, visual, *rest in loader:
            yield (audio.to(self.device, non_blocking=True).to(dtype),
                   visual.to(self.device, non_blocking=True).to(dtype), *rest)

    def close(self) -> None:
        """Free the tokens (device memory, or the files)."""
        self._maps.clear()
        self._tensors = {}
        if not self.on_device and not self.kept:
            shutil.rmtree(self.folder, ignore_errors=True)

    def describe(self) -> dict[str, Any]:
        return {"rows": self.rows, "bytes": self.nbytes, "dtype": str(self.dtype).removeprefix("torch."),
                "where": "device" if self.on_device else "file"}


def _torch_storage(dtype: torch.dtype) -> torch.dtype:
    """The torch dtype whose bits numpy can hold for ``dtype`` (bfloat16 travels as int16)."""
    return torch.int16 if dtype == torch.bfloat16 else dtype


class _Chunks(Dataset):
    """Batch ``b`` of a file-backed cache, read by a DataLoader worker."""

    def __init__(self, cache: TokenCache, chunks: list[torch.Tensor]) -> None:
        self.cache, self.chunks = cache, chunks

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, b: int) -> tuple[torch.Tensor, ...]:
        index = self.chunks[b]
        c = self.cache
        return (*c.read(index), c.labels[index], c.case_ids[index], c.positions[index])


@torch.inference_mode()
def encode_into(cache: TokenCache, encoder: UniqueEncoder, batches: Iterable[Sequence[torch.Tensor]],
                device: torch.device, autocast, start: int = 0) -> int:
    """Encode raw batches ``(audio, visual, label, case_id[, position])`` into the cache from row ``start``, each
    distinct input once (``encoder``, one per cache); returns the next free row."""
    encoder.cache = cache
    for batch in batches:
        audio, visual, labels, case_ids = batch[:4]
        positions = batch[4] if len(batch) > 4 else torch.zeros(labels.shape[0], dtype=torch.long)
        with autocast():
            a, v = encoder.encode(start, audio, visual, device)
        cache.write(start, a, v, labels, case_ids, positions)
        start += audio.shape[0]
    return start


def copy_cases(source: TokenCache, target: TokenCache, cases: Sequence[str], samples: int, batch_size: int) -> None:
    """Fill ``target`` (:class:`uvav.data.loading.EvalSet`'s rows of ``cases``: row ``i * C + p`` is sample ``i``
    under ``cases[p]``) from ``source`` (those of every evaluation case, :data:`uvav.cases.EVAL_CASES`), about
    ``batch_size`` rows at a time."""
    positions = torch.tensor([EVAL_CASES.index(case) for case in cases])
    step = max(1, batch_size // len(cases))  # samples per copy
    for first in range(0, samples, step):
        chosen = torch.arange(first, min(first + step, samples))
        index = (chosen[:, None] * len(EVAL_CASES) + positions[None, :]).flatten()
        labels, case_ids, _ = (info[index] for info in source.row_info())
        target.write(first * len(cases), *source.read(index), labels, case_ids,
                     torch.arange(len(cases)).repeat(len(chosen)))


def build_caches(stage: Stage, feed: Feed, settings: FitSettings, device: torch.device, seed: int, autocast,
                 meter: ResourceMeter, folder: Path | None = None, val_tokens: TokenCache | None = None
                 ) -> tuple[TokenCache, TokenCache]:
    """Encoder outputs of ``cache_views`` corrupted views of every training sample (view ``v`` of sample ``i``
    = the draws of (seed, v, i)), and of the validation set under each training case: copied from ``val_tokens``
    (the validation set's encodings under every evaluation case, the same draws) when given. Afterwards the frozen
    encoders leave the accelerator: the cached stage trains without them. With ``folder`` (an entry of the
    encodings store) both go to files there, ``train`` and ``val``."""
    started = time.perf_counter()
    model, n, bs = stage.model, len(feed.train), settings.eval_batch_size
    model.eval()
    with torch.inference_mode():
        audio, visual = feed.train.sample(0)
        with autocast():
            a, v = model.encode(audio[None].to(device), visual[None].to(device))
    dtype = cache_dtype(feed.cache_dtype, device)
    budget = feed.cache_device_gb * 2**30 if folder is None else 0.0
    paths = ((folder / "train", folder / "val") if folder is not None else
             tuple((feed.token_dir or Path(".")) / f"tokens_{stage.name}_{part}" for part in ("train", "val")))
    views = TokenCache(n * stage.cache_views, a.shape[1:], v.shape[1:], dtype, device, budget, paths[0])

    def progress(loader, what: str):
        return tqdm(loader, desc=f"{stage.name}: caching {what}", leave=False, disable=not settings.progress)

    encoder = UniqueEncoder(model)  # one for every view: a clean modality recurs across a sample's views
    for view in range(stage.cache_views):
        dataset = TrainSet(feed.train, feed.noise, stage.train_cases, seed, view, feed.augmentation, stream="view",
                           missing_rate=feed.missing_rate)
        encode_into(views, encoder, progress(feed.options.loader(dataset, bs), f"view {view + 1}"), device,
                    autocast, start=view * n)
    val_set = EvalSet(feed.val, feed.noise, stage.train_cases, SALTS["val"])
    val = TokenCache(len(val_set), a.shape[1:], v.shape[1:], dtype, device,
                     budget - (views.nbytes if views.on_device else 0), paths[1])
    if val_tokens is not None and val_tokens.shapes["visual"][1:] == val.shapes["visual"][1:]:
        copy_cases(val_tokens, val, stage.train_cases, len(feed.val), bs)
    else:
        encode_into(val, UniqueEncoder(model), progress(feed.options.loader(val_set, bs), "validation"), device,
                    autocast)
    place_encoders(stage, torch.device("cpu"))
    meter.cache = {"views": stage.cache_views, "bytes": views.nbytes, "train": views.describe(),
                   "val": val.describe(), "build_s": round(time.perf_counter() - started, 3)}
    return views, val


class SharedViews:
    """The frozen base's cached training views and validation encodings, built by the first stage that trains on
    them with draws of ``seed`` (one seed for every stage of the job that shares the base's encodings, so that the
    head-only baseline and the prompts train on the same corrupted views) and reused by the next stages of the same
    training cases and view count; :meth:`close` frees them at the end of the job."""

    def __init__(self, seed: int, store: EncodingStore | None = None, base: dict | None = None) -> None:
        self.seed = seed
        self.store, self.base = store, base  # kept across jobs under the frozen base's key (else the job's own)
        # the job's shared validation encodings (every evaluation case): the cached validation set is copied from
        # them (:func:`build_caches`); set by the job before a stage trains
        self.val_tokens: TokenCache | None = None
        self.caches: tuple[TokenCache, TokenCache] | None = None
        self.made_for: tuple[tuple[str, ...], int] | None = None
        self.info: dict[str, Any] = {}

    def get(self, stage: Stage, feed: Feed, settings: FitSettings, device: torch.device, autocast,
            meter: ResourceMeter) -> tuple[TokenCache, TokenCache]:
        """The caches for ``stage`` (built now when absent or made for other cases or view counts)."""
        wanted = (tuple(stage.train_cases), stage.cache_views)
        if self.caches is not None and self.made_for == wanted:
            place_encoders(stage, torch.device("cpu"))  # it trains on the shared caches without them
            meter.cache = {**self.info, "build_s": 0.0, "shared_with": self.info["built_by"]}
            return self.caches
        self.close()
        self.made_for = wanted
        if self.store is None:
            self.caches = build_caches(stage, feed, settings, device, self.seed, autocast, meter,
                                       val_tokens=self.val_tokens)
            self.info = {**meter.cache, "built_by": stage.name}
            return self.caches
        spec = {**self.base, "what": "training views", "cases": list(stage.train_cases), "views": stage.cache_views,
                "seed": self.seed, "augmentation": list(feed.augmentation), "missing_rate": feed.missing_rate,
                "dtype": str(cache_dtype(feed.cache_dtype, device)), "batch_size": settings.eval_batch_size}
        caches, found = self.store.get(spec, lambda folder: build_caches(stage, feed, settings, device, self.seed,
                                                                         autocast, meter, folder, self.val_tokens),
                                       device, feed.cache_device_gb * 2**30)
        self.caches = (caches[0], caches[1])
        if found:  # made by an earlier job on this base
            place_encoders(stage, torch.device("cpu"))
            meter.cache = {"views": stage.cache_views, "bytes": caches[0].nbytes, "train": caches[0].describe(),
                           "val": caches[1].describe(), "build_s": 0.0, "reused_from": str(caches[0].folder.parent)}
        self.info = {**meter.cache, "built_by": stage.name}
        return self.caches

    def close(self) -> None:
        for cache in self.caches or ():
            cache.close()
        self.caches = None


def place_encoders(stage: Stage, device: torch.device) -> None:
    """Move the modality encoders (frozen in a cached stage) to ``device``; no-op on a CPU run."""
    if next(stage.model.head.parameters()).device.type != "cpu":
        stage.model.audio.to(device)
        stage.model.visual.to(device)
