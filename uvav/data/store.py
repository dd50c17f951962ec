"""The on-disk feature store, reading side: a dataset's decoded features, read one sample at a time through
memory maps. Building a store (decoding, crash safety, checks on opening) is :mod:`uvav.data.store_build`.

One folder per dataset and feature setting, ``<cache_dir>/<dataset>-<key24>/``, where the key hashes every
source file (path, size, mtime) and every feature setting (:func:`uvav.data.features.cache_key`)::

    chunk-00000.audio.npy    float16 [n, T, F]        unnormalised fbank of items 0 .. n-1 (float32 with
                                                      data.store_dtype=float32)
    chunk-00000.visual.npy   uint8   [n, V, 3, S, S]  images: V frames per clip (1 but for cavmae_json)
    chunk-00000.json         per item: ok, short, and why it was skipped; per npy file: bytes, mtime, sha256;
                             ``repair``: an id given when the chunk was rebuilt because it was found damaged
    ...                      (store_build.CHUNK_SIZE items per chunk, the last one shorter)
    store.json               written last: settings, items, shapes, dtypes, chunk size, skipped and short rows,
                             content_digest (:func:`content_digest`, recorded by every model trained on it)
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

from uvav.data.base import AVData, AVSplit, as_labels
from uvav.data.features import (
    CAVMAE_MEAN,
    CAVMAE_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    NORMALIZE_MODES,
    check_choice,
    split_digest,
)
from uvav.errors import UserError
from uvav.outputs import read_json

EVAL_FRAMES = ("middle", "average")  # data.eval_frames
STORE_VERSION = 2  # 2: frames per clip (visual [n, V, 3, S, S]), fbank dtype float16 or float32
MAX_OPEN_CHUNKS = 64  # chunk maps a process keeps open (each holds a file descriptor)
Decoded = tuple[torch.Tensor, bool, torch.Tensor]  # fbank [T, F], padded because short, uint8 [(V,) 3, S, S]
FRAME_CHOICES = ("random", "middle", "all")  # which stored frame(s) a split's sample gives


class StoreSpaceError(UserError, OSError):
    """Not enough free disk space for the feature store (``errno`` ENOSPC)."""


@dataclass(frozen=True)
class StoreSpec:
    """What a store holds and how to decode one item. ``decode(item)`` must be picklable (a module-level
    function or a ``functools.partial`` of one) and raise :class:`~uvav.data.features.DecodeError` naming
    the file that failed. ``frames``: images stored per item (``visual_shape`` is one frame's)."""

    name: str
    decode: Callable[[Any], Decoded]
    audio_shape: tuple[int, int]
    visual_shape: tuple[int, int, int]
    on_bad_file: str = "error"
    frames: int = 1
    audio_dtype: str = "float16"


def chunk_path(folder: Path, chunk: int, suffix: str) -> Path:
    return folder / f"chunk-{chunk:05d}.{suffix}"


def content_digest(folder: Path, chunks: int) -> str:
    """What a store holds, in one hash: every chunk's npy sha256s and, for a chunk rebuilt because it was found
    damaged, the id of that repair (the same bytes decoded again still name other content than what a model
    trained on the damaged chunk saw). Models and jobs record it; :attr:`FeatureStore.content_digest`."""
    parts = []
    for c in range(chunks):
        record = read_json(chunk_path(folder, c, "json")) or {}
        files = record.get("files") or {}
        parts.append([c, *(files.get(k, {}).get("sha256") for k in ("audio", "visual")), record.get("repair")])
    return "store:" + hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]


class FeatureStore:
    """A published store: ``read(row)`` gives item ``row``'s unnormalised features as read-only arrays."""

    def __init__(self, folder: str | Path, meta: dict[str, Any], report: dict[str, Any] | None = None) -> None:
        self.folder = Path(folder)
        self.items, self.chunk_size = int(meta["items"]), int(meta["chunk_size"])
        self.audio_shape = tuple(meta["audio"]["shape"][1:])
        self.frames, *visual_shape = meta["visual"]["shape"][1:]  # [n, V, 3, S, S]
        self.visual_shape = tuple(visual_shape)  # one frame's
        self.skipped: list[dict[str, Any]] = meta["skipped"]  # {"row", "path", "reason"}
        self.short_rows: list[int] = meta["short_rows"]
        self.bytes = int(meta["bytes"])
        self.content_digest: str = meta.get("content_digest") or content_digest(self.folder, int(meta["chunks"]))
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
        """``(float16/32 [T, F], uint8 [V, 3, S, S])`` of item ``row``: read-only views into the chunk's maps."""
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
        if known is not None and known.get("rows") == int(rows.size) and known.get("content") == self.content_digest:
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
        _try_write(cache, {"rows": int(rows.size), "mean": mean, "std": std, "content": self.content_digest})
        return mean, std

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_maps": OrderedDict()}  # workers open their own maps

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.folder)!r}, items={self.items})"


_IMAGE_MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
_IMAGE_STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


class StoreSplit(AVSplit):
    """A split read from a :class:`FeatureStore`: store ``rows``, their ``labels`` (long ``[N]``, or float
    multi-hot ``[N, K]``), and the fbank statistics each sample is normalised with; images get ImageNet's
    mean/std. ``frames`` picks among a clip's stored frames (see :meth:`sample`)."""

    def __init__(self, store: FeatureStore, rows: torch.Tensor, labels: torch.Tensor, audio_mean: float,
                 audio_std: float, frames: str = "middle") -> None:
        labels = torch.as_tensor(labels)
        self.store, self.rows = store, torch.as_tensor(rows).long()
        self.labels = as_labels(labels)
        if self.rows.shape[0] != self.labels.shape[0]:
            raise ValueError(f"{self.rows.numel()} rows but {self.labels.shape[0]} labels")
        if frames not in FRAME_CHOICES:
            raise ValueError(f"frames={frames!r}: one of {list(FRAME_CHOICES)}")
        self.audio_mean, self.audio_std, self.frames = float(audio_mean), float(audio_std), frames

    def sample(self, i: int, gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample ``i``: fbank ``[T, F]`` and image ``[3, S, S]`` — with several stored frames, a random one
        drawn from ``gen`` (``frames="random"``, training; no ``gen``: the middle one), the middle one
        (``stored // 2``), or all of them, ``[V, 3, S, S]`` (``frames="all"``, evaluation by averaging)."""
        audio, visual = self.store.read(int(self.rows[i]))
        stored = visual.shape[0]
        if self.frames == "all" and stored > 1:
            pick: slice | int = slice(None)
        elif self.frames == "random" and stored > 1 and gen is not None:
            pick = int(torch.randint(stored, (1,), generator=gen))
        else:
            pick = stored // 2
        fb = torch.from_numpy(audio.astype(np.float32)).sub_(self.audio_mean).div_(self.audio_std)
        img = torch.from_numpy(visual[pick].astype(np.float32)).div_(255.0).sub_(_IMAGE_MEAN).div_(_IMAGE_STD)
        return fb, img

    def subset(self, index: torch.Tensor) -> StoreSplit:
        return StoreSplit(self.store, self.rows[index], self.labels[index], self.audio_mean, self.audio_std,
                          self.frames)

    def with_audio_normalization(self, mean: float, std: float) -> StoreSplit:
        return StoreSplit(self.store, self.rows, self.labels, mean, std, self.frames)

    def with_frames(self, frames: str) -> StoreSplit:
        """The same samples with another frame choice (``random`` | ``middle`` | ``all``)."""
        return StoreSplit(self.store, self.rows, self.labels, self.audio_mean, self.audio_std, frames)

    def __repr__(self) -> str:
        return f"StoreSplit({self.store!r}, n={len(self)})"


def store_avdata(
    store: FeatureStore, rows: torch.Tensor, labels: torch.Tensor, parts: dict[str, torch.Tensor],
    class_names: list[str], normalize: str, info: dict[str, Any], names: Sequence[str], eval_frames: str = "middle",
    corrupted: tuple[FeatureStore, dict[str, torch.Tensor], dict[str, Any]] | None = None,
) -> AVData:
    """Train/val/test splits read from ``store``: ``rows``, ``labels`` and ``names`` list the usable items,
    ``parts`` index into them. Records sizes, class counts, the normalisation, a digest of each split's
    file names, the shapes and the store in ``info``. With several frames stored per clip, training draws a
    random one per sample and epoch, validation reads the middle one, and the test split the middle one or all
    of them (``eval_frames="average"``: predictions averaged over the frames, CAV-MAE's reported protocol).
    ``corrupted``: the store of the validation and test clips under a corruption, their rows in it and its record
    (:func:`uvav.data.corrupting.eval_store`); those splits then read it, normalised as the clean training split."""
    check_choice("data.normalize", normalize, NORMALIZE_MODES)
    if normalize == "cavmae":
        mean, std = CAVMAE_MEAN, CAVMAE_STD
    else:
        mean, std = store.audio_stats(rows[parts["train"]])
    check_choice("data.eval_frames", eval_frames, EVAL_FRAMES)
    frames = {"train": "random", "val": "middle", "test": "all" if eval_frames == "average" else "middle"}
    splits = {k: StoreSplit(store, rows[idx], labels[idx], mean, std, frames[k]) for k, idx in parts.items()}
    if corrupted is not None:
        other, at, record = corrupted
        splits.update({k: StoreSplit(other, at[k], labels[parts[k]], mean, std, frames[k]) for k in at})
        info = {**info, "corruption": {k: v for k, v in record.items() if k != "content_digest"}}
    empty = [k for k, s in splits.items() if len(s) == 0]
    if empty:
        warnings.warn(f"empty split(s) {empty}: too few files per class for the fractions asked", stacklevel=3)
    info = {
        **info,
        "sizes": {k: len(s) for k, s in splits.items()},
        "class_counts": {k: class_counts(s.labels, len(class_names)) for k, s in splits.items()},
        "normalization": {
            "audio": normalize, "audio_mean": mean, "audio_std": std,
            "audio_source": "training split" if normalize == "train" else "CAV-MAE (AudioSet) constants",
            "visual": "imagenet", "visual_mean": list(IMAGENET_MEAN), "visual_std": list(IMAGENET_STD),
        },
        "split_digest": {k: split_digest(names, idx) for k, idx in parts.items()},
        "audio_shape": list(store.audio_shape),
        "visual_shape": list(store.visual_shape),
        "frames": {"stored": store.frames, **({"train": "random", "val": "middle", "test": eval_frames}
                                               if store.frames > 1 else {})},
        "store": store.report,
        "content_digest": store.content_digest if corrupted is None else
        f"{store.content_digest}+{corrupted[2]['content_digest']}",
        "cache": {"path": store.report.get("path", str(store.folder)), "hit": store.report.get("hit", True)},
    }
    return AVData(splits["train"], splits["val"], splits["test"], class_names, info)


def class_counts(labels: torch.Tensor, num_classes: int) -> list[int]:
    """Clips per class: of class indices ``[N]``, or of multi-hot ``[N, K]`` (a clip counts in each class)."""
    if labels.dim() == 2:
        return labels.gt(0).sum(dim=0).tolist()
    return torch.bincount(labels, minlength=num_classes).tolist()


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
