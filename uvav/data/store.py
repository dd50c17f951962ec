"""The on-disk feature store, reading side: a dataset's decoded features, read one sample at a time through
memory maps. Building a store (decoding, crash safety, checks on opening) is :mod:`uvav.data.store_build`.

One folder per dataset and feature setting, ``<cache_dir>/<dataset>-<key24>/``, where the key hashes every
source file (path, size, mtime) and every feature setting (:func:`uvav.data.features.cache_key`)::

    chunk-00000.audio.npy    float16 [n, T, F]     unnormalised fbank of items 0 .. n-1
    chunk-00000.visual.npy   uint8   [n, 3, S, S]  images
    chunk-00000.json         per item: ok, short, and why it was skipped; per npy file: bytes, mtime, sha256
    ...                      (store_build.CHUNK_SIZE items per chunk, the last one shorter)
    store.json               written last: settings, items, shapes, dtypes, chunk size, skipped and short rows
    stats-<digest>.json      audio mean/std of a set of rows (a training split), computed once

Why numpy ``.npy`` files opened with ``np.load(mmap_mode="r")``: no dependency beyond numpy; reading sample
``i`` is one index into a map, O(1) whatever the dataset's size; the pages read are the kernel's file cache,
which it drops under memory pressure instead of the process growing (the whole-split float32 tensors of a
paper-size dataset took 16 GiB of RAM, docs/facts.md §8); a map is shared by the DataLoader's forked workers,
and a pickled store carries only its folder and a few numbers (each process opens the maps it needs, lazily).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from uvav.data.base import AVData, AVSplit
from uvav.data.features import (
    CAVMAE_MEAN,
    CAVMAE_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    NORMALIZE_MODES,
    check_choice,
    split_digest,
)
from uvav.outputs import read_json

STORE_VERSION = 1
MAX_OPEN_CHUNKS = 64  # chunk maps a process keeps open (each holds a file descriptor)
Decoded = tuple[torch.Tensor, bool, torch.Tensor]  # fbank [T, F], padded because short, uint8 image [3, S, S]


class StoreSpaceError(OSError):
    """Not enough free disk space for the feature store (``errno`` ENOSPC)."""


@dataclass(frozen=True)
class StoreSpec:
    """What a store holds and how to decode one item. ``decode(item)`` must be picklable (a module-level
    function or a ``functools.partial`` of one) and raise :class:`~uvav.data.features.DecodeError` naming
    the file that failed."""

    name: str
    decode: Callable[[Any], Decoded]
    audio_shape: tuple[int, int]
    visual_shape: tuple[int, int, int]
    on_bad_file: str = "error"


def chunk_path(folder: Path, chunk: int, suffix: str) -> Path:
    return folder / f"chunk-{chunk:05d}.{suffix}"


class FeatureStore:
    """A published store: ``read(row)`` gives item ``row``'s unnormalised features as read-only arrays."""

    def __init__(self, folder: str | Path, meta: dict[str, Any], report: dict[str, Any] | None = None) -> None:
        self.folder = Path(folder)
        self.items, self.chunk_size = int(meta["items"]), int(meta["chunk_size"])
        self.audio_shape = tuple(meta["audio"]["shape"][1:])
        self.visual_shape = tuple(meta["visual"]["shape"][1:])
        self.skipped: list[dict[str, Any]] = meta["skipped"]  # {"row", "path", "reason"}
        self.short_rows: list[int] = meta["short_rows"]
        self.bytes = int(meta["bytes"])
        self.report = report or {}  # how this process got the store (see build_store)
        self._maps: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()

    @classmethod
    def open(cls, folder: str | Path) -> FeatureStore:
        meta = read_json(Path(folder) / "store.json")
        if meta is None or meta.get("version") != STORE_VERSION:
            raise FileNotFoundError(f"{folder}: no published feature store (store.json missing or unreadable)")
        return cls(folder, meta)

    def __len__(self) -> int:
        return self.items

    @property
    def ok(self) -> np.ndarray:
        """Per row: decoded (True) or skipped as a bad file (False, features are zeros)."""
        mask = np.ones(self.items, dtype=bool)
        mask[[s["row"] for s in self.skipped]] = False
        return mask

    def read(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """``(float16 [T, F], uint8 [3, S, S])`` of item ``row``: read-only views into the chunk's maps."""
        if not 0 <= row < self.items:
            raise IndexError(f"row {row} out of range for a store of {self.items} items")
        chunk, offset = divmod(row, self.chunk_size)
        audio, visual = self._chunk(chunk)
        return np.asarray(audio[offset]), np.asarray(visual[offset])

    def _chunk(self, chunk: int) -> tuple[np.ndarray, np.ndarray]:
        maps = self._maps.get(chunk)
        if maps is None:
            audio, visual = (np.load(chunk_path(self.folder, chunk, f"{part}.npy"), mmap_mode="r")
                             for part in ("audio", "visual"))
            maps = audio, visual
            self._maps[chunk] = maps
            while len(self._maps) > MAX_OPEN_CHUNKS:
                self._maps.popitem(last=False)
        else:
            self._maps.move_to_end(chunk)
        return maps

    def audio_stats(self, rows: Sequence[int] | np.ndarray | torch.Tensor) -> tuple[float, float]:
        """Mean and (unbiased) standard deviation of the fbank over ``rows``, streamed chunk by chunk in
        float64 (a training split's normalisation statistics); cached in ``stats-<digest>.json``."""
        rows = np.sort(np.asarray(rows, dtype=np.int64))
        if rows.size == 0:
            raise ValueError("the training split is empty: cannot compute normalisation statistics")
        cache = self.folder / f"stats-{hashlib.sha256(rows.tobytes()).hexdigest()[:16]}.json"
        known = read_json(cache)
        if known is not None and known.get("rows") == int(rows.size):
            return float(known["mean"]), float(known["std"])
        n, mean, m2 = 0, 0.0, 0.0
        bounds = np.searchsorted(rows, np.arange(0, self.items + self.chunk_size, self.chunk_size))
        for chunk, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
            if lo == hi:
                continue
            x = self._chunk(chunk)[0][rows[lo:hi] - chunk * self.chunk_size].astype(np.float64)
            k, mean_k = x.size, float(x.mean())
            m2_k, delta = float(np.square(x - mean_k).sum()), mean_k - mean
            mean, m2, n = mean + delta * k / (n + k), m2 + m2_k + delta * delta * n * k / (n + k), n + k
        std = math.sqrt(m2 / max(n - 1, 1))
        _try_write(cache, {"rows": int(rows.size), "mean": mean, "std": std})
        return mean, std

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_maps": OrderedDict()}  # workers open their own maps

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.folder)!r}, items={self.items})"


_IMAGE_MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
_IMAGE_STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


class StoreSplit(AVSplit):
    """A split read from a :class:`FeatureStore`: store ``rows``, their ``labels``, and the fbank statistics
    each sample is normalised with; images get ImageNet's mean/std."""

    def __init__(self, store: FeatureStore, rows: torch.Tensor, labels: torch.Tensor, audio_mean: float,
                 audio_std: float) -> None:
        self.store, self.rows, self.labels = store, torch.as_tensor(rows).long(), torch.as_tensor(labels).long()
        if self.rows.shape != self.labels.shape:
            raise ValueError(f"{self.rows.numel()} rows but {self.labels.numel()} labels")
        self.audio_mean, self.audio_std = float(audio_mean), float(audio_std)

    def sample(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        audio, visual = self.store.read(int(self.rows[i]))
        fb = torch.from_numpy(audio.astype(np.float32)).sub_(self.audio_mean).div_(self.audio_std)
        img = torch.from_numpy(visual.astype(np.float32)).div_(255.0).sub_(_IMAGE_MEAN).div_(_IMAGE_STD)
        return fb, img

    def subset(self, index: torch.Tensor) -> StoreSplit:
        return StoreSplit(self.store, self.rows[index], self.labels[index], self.audio_mean, self.audio_std)

    def with_audio_normalization(self, mean: float, std: float) -> StoreSplit:
        return StoreSplit(self.store, self.rows, self.labels, mean, std)

    def __repr__(self) -> str:
        return f"StoreSplit({self.store!r}, n={len(self)})"


def store_avdata(
    store: FeatureStore, rows: torch.Tensor, labels: torch.Tensor, parts: dict[str, torch.Tensor],
    class_names: list[str], normalize: str, info: dict[str, Any], names: Sequence[str],
) -> AVData:
    """Train/val/test splits read from ``store``: ``rows``, ``labels`` and ``names`` list the usable items,
    ``parts`` index into them. Records sizes, class counts, the normalisation, a digest of each split's
    file names, the shapes and the store in ``info``."""
    check_choice("data.normalize", normalize, NORMALIZE_MODES)
    if normalize == "cavmae":
        mean, std = CAVMAE_MEAN, CAVMAE_STD
    else:
        mean, std = store.audio_stats(rows[parts["train"]])
    splits = {k: StoreSplit(store, rows[idx], labels[idx], mean, std) for k, idx in parts.items()}
    empty = [k for k, s in splits.items() if len(s) == 0]
    if empty:
        warnings.warn(f"empty split(s) {empty}: too few files per class for the fractions asked", stacklevel=3)
    info = {
        **info,
        "sizes": {k: len(s) for k, s in splits.items()},
        "class_counts": {k: torch.bincount(s.labels, minlength=len(class_names)).tolist()
                         for k, s in splits.items()},
        "normalization": {
            "audio": normalize, "audio_mean": mean, "audio_std": std,
            "audio_source": "training split" if normalize == "train" else "CAV-MAE (AudioSet) constants",
            "visual": "imagenet", "visual_mean": list(IMAGENET_MEAN), "visual_std": list(IMAGENET_STD),
        },
        "split_digest": {k: split_digest(names, idx) for k, idx in parts.items()},
        "audio_shape": list(store.audio_shape),
        "visual_shape": list(store.visual_shape),
        "store": store.report,
        "cache": {"path": store.report.get("path", str(store.folder)), "hit": store.report.get("hit", True)},
    }
    return AVData(splits["train"], splits["val"], splits["test"], class_names, info)


# ---------------------------------------------------------------- files
# Temporary name, then rename; uvav.data.store_build writes the chunks' json and store.json with these too.
def _write_json(path: Path, obj: Any) -> None:
    """Write to ``<name>.<pid>.tmp`` and rename: readers see the old file or the whole new one."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(obj, sort_keys=True) + "\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _try_write(path: Path, obj: Any) -> None:
    """:func:`_write_json` where failing only costs recomputation (a read-only cache, a racing builder)."""
    try:
        _write_json(path, obj)
    except OSError:
        pass
