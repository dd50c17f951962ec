"""The on-disk feature store: a dataset's decoded features, read one sample at a time through memory maps.

One folder per dataset and feature setting, ``<cache_dir>/<dataset>-<key24>/``, where the key hashes every
source file (path, size, mtime) and every feature setting (:func:`uvav.data.features.cache_key`)::

    chunk-00000.audio.npy    float16 [n, T, F]     unnormalised fbank of items 0 .. n-1
    chunk-00000.visual.npy   uint8   [n, 3, S, S]  images
    chunk-00000.json         per item: ok, short, and why it was skipped; per npy file: bytes, mtime, sha256
    ...                      (CHUNK_SIZE items per chunk, the last one shorter)
    store.json               written last: settings, items, shapes, dtypes, chunk size, skipped and short rows
    stats-<digest>.json      audio mean/std of a set of rows (a training split), computed once

Why numpy ``.npy`` files opened with ``np.load(mmap_mode="r")``: no dependency beyond numpy; reading sample
``i`` is one index into a map, O(1) whatever the dataset's size; the pages read are the kernel's file cache,
which it drops under memory pressure instead of the process growing (the whole-split float32 tensors of a
paper-size dataset took 16 GiB of RAM); a map is shared by the DataLoader's forked workers, and a pickled
store carries only its folder and a few numbers (each process opens the maps it needs, lazily).

Decoding runs on ``data.num_workers`` forked processes (default: every core this process may use), one torch
thread each; each decodes and writes whole chunks, so no arrays travel between processes. The free disk space
is checked against what remains to be written before decoding starts (:class:`StoreSpaceError`).

Crash safety: a chunk's npy files go to temporary names and are renamed, then its json is written the same
way, so after a ``kill -9`` only complete chunks carry a json; a relaunch keeps them and decodes the rest.
``store.json`` appears when every chunk exists: that publishes the store. A ``flock`` makes a second process
wait for the first one's build and then use it. Nothing is fsync'ed: a power cut is caught by the checks on
opening, which compare each npy file's size and mtime with its json, re-hash it (sha256) when they differ
(every chunk with ``data.verify_store=true``) and rebuild a chunk that fails, with a warning naming it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import json
import math
import multiprocessing as mp
import os
import shutil
import signal
import sys
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from uvav.data.base import AVData, AVSplit
from uvav.data.features import (
    CAVMAE_MEAN,
    CAVMAE_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    NORMALIZE_MODES,
    BadFileError,
    DecodeError,
    cache_key,
    check_choice,
    one_torch_thread,
    split_digest,
)
from uvav.data.loading import resolve_workers
from uvav.outputs import file_sha256, read_json

STORE_VERSION = 1
CHUNK_SIZE = 64  # items per chunk: ~26 MB at 1024x128 fbank + 224 px; many chunks keep every worker busy
MAX_OPEN_CHUNKS = 64  # chunk maps a process keeps open (each holds a file descriptor)
PAUSE_ENV = "UVAV_STORE_PAUSE_AFTER"  # tests: "<n>:<marker>" stops a build before its chunk n+1 is complete
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


# ---------------------------------------------------------------- reading
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


# ---------------------------------------------------------------- building
@dataclass(frozen=True)
class _Job:
    """Everything a chunk task needs; decoding processes inherit it when forked."""

    spec: StoreSpec
    items: Sequence[Any]
    folder: Path
    chunk_size: int

    @property
    def chunks(self) -> int:
        return -(-len(self.items) // self.chunk_size)

    def rows(self, chunk: int) -> range:
        return range(chunk * self.chunk_size, min(len(self.items), (chunk + 1) * self.chunk_size))

    def chunk_bytes(self, chunk: int) -> int:
        """Bytes a chunk's files take (npy headers and json estimated generously)."""
        per_item = 2 * math.prod(self.spec.audio_shape) + math.prod(self.spec.visual_shape) + 128
        return len(self.rows(chunk)) * per_item + 4096


def build_store(
    spec: StoreSpec, items: Sequence[Any], sources: Sequence[str | Path], settings: dict[str, Any],
    cache_dir: str | Path, workers: int | None = None, verify: bool = False,
) -> FeatureStore:
    """Open the store of ``items`` (decoded in order: item ``i`` is row ``i``), decoding what is missing or
    damaged on ``workers`` processes (``data.num_workers``, :func:`uvav.data.loading.resolve_workers`). The store
    is named by ``sources`` and ``settings``; ``verify`` re-hashes every chunk. ``store.report`` says what was
    done: ``path``, ``hit`` (published already), ``items``, ``bytes``, ``chunks_rebuilt`` (found damaged),
    ``chunks_decoded``, ``decode_s``, ``workers``."""
    if not items:
        raise ValueError(f"{spec.name}: nothing to store")
    check_choice("data.on_bad_file", spec.on_bad_file, ("error", "skip"))
    settings = {**settings, "store": {"version": STORE_VERSION, "chunk_size": CHUNK_SIZE}}
    folder = Path(cache_dir) / f"{spec.name}-{cache_key(sources, settings)[:24]}"
    job = _Job(spec, items, folder, CHUNK_SIZE)
    report = {"path": str(folder), "hit": True, "items": len(items), "chunks_rebuilt": 0, "chunks_decoded": 0,
              "decode_s": 0.0, "workers": 0}
    meta = _published(folder, len(items))
    if meta is not None and not any(_chunk_problem(job, c, verify) for c in range(job.chunks)):
        return FeatureStore(folder, meta, {**report, "bytes": meta["bytes"]})
    folder.mkdir(parents=True, exist_ok=True)
    with _build_lock(folder / ".lock") as lock_fd:
        meta = _published(folder, len(items))  # another process may have built or repaired it meanwhile
        for stale in folder.glob("*.tmp"):  # left by a killed build: nobody else writes while we hold the lock
            stale.unlink(missing_ok=True)
        todo = []
        for c in range(job.chunks):
            problem = _chunk_problem(job, c, verify)
            if problem and (meta is not None or chunk_path(folder, c, "json").exists()):
                warnings.warn(f"feature store {folder}: {problem}; rebuilding chunk {c}", stacklevel=2)
                report["chunks_rebuilt"] += 1
            if problem:
                todo.append(c)
        needed = sum(job.chunk_bytes(c) for c in todo) + 65536  # + store.json
        free = shutil.disk_usage(folder).free
        if todo and needed > free:
            raise StoreSpaceError(errno.ENOSPC, _space_message(folder, needed, free))
        try:
            if todo:
                start = time.perf_counter()
                report["workers"] = _decode(job, todo, resolve_workers(workers), lock_fd)
                report.update(chunks_decoded=len(todo), decode_s=round(time.perf_counter() - start, 3))
            if todo or meta is None:
                report["hit"] = meta is not None
                meta = _publish(job, settings)
        except OSError as exc:
            if exc.errno != errno.ENOSPC or isinstance(exc, StoreSpaceError):
                raise
            raise StoreSpaceError(errno.ENOSPC, _space_message(folder, needed, shutil.disk_usage(folder).free)) from exc
    return FeatureStore(folder, meta, {**report, "bytes": meta["bytes"]})


@contextlib.contextmanager
def _build_lock(path: Path) -> Iterator[int]:
    """An exclusive ``flock`` on ``path``, held until exit or until the holder dies; yields its descriptor."""
    with open(path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield handle.fileno()


def _published(folder: Path, items: int) -> dict[str, Any] | None:
    meta = read_json(folder / "store.json")
    ok = meta is not None and meta.get("version") == STORE_VERSION and meta.get("items") == items
    return meta if ok else None


def _chunk_problem(job: _Job, chunk: int, rehash: bool) -> str | None:
    """None when the chunk's files match its json (size, and mtime or else sha256), else what is wrong."""
    path = chunk_path(job.folder, chunk, "json")
    record = read_json(path)
    if record is None:
        return f"{path.name} {'unreadable' if path.exists() else 'missing'}"
    rows = job.rows(chunk)
    if record.get("rows") != [rows.start, rows.stop] or set(record.get("files", {})) != {"audio", "visual"}:
        return f"{path.name} describes other rows or files"
    refreshed = False
    for meta in record["files"].values():
        npy = job.folder / meta["name"]
        try:
            stat = npy.stat()
        except FileNotFoundError:
            return f"{npy.name} missing"
        if stat.st_size != meta["bytes"]:
            return f"{npy.name} truncated or changed ({stat.st_size} bytes, {meta['bytes']} written)"
        if rehash or stat.st_mtime_ns != meta["mtime_ns"]:
            if file_sha256(npy) != meta["sha256"]:
                return f"{npy.name} fails its sha256 check"
            refreshed |= stat.st_mtime_ns != meta["mtime_ns"]
            meta["mtime_ns"] = stat.st_mtime_ns
    if refreshed:  # intact but touched (copied, restored): record the new mtime so it is not re-hashed again
        _try_write(path, record)
    return None


def _decode(job: _Job, todo: list[int], workers: int, lock_fd: int) -> int:
    """Decode and write the chunks ``todo``: in this process, or on a fork pool (one chunk per task).
    Returns the number of decoding processes."""
    procs = max(1, min(workers, len(todo)))
    bar = tqdm(total=sum(len(job.rows(c)) for c in todo), desc=f"{job.spec.name} features", unit="file",
               file=sys.stderr, mininterval=1.0)
    try:
        if procs == 1:
            with one_torch_thread():
                for c in todo:
                    _decode_chunk(job, c)
                    bar.update(len(job.rows(c)))
            return 1
        pool = ProcessPoolExecutor(procs, mp_context=mp.get_context("fork"), initializer=_init_worker,
                                   initargs=(job, os.getpid(), lock_fd))
        try:
            futures = {pool.submit(_worker_task, c): c for c in todo}
            for future in as_completed(futures):
                future.result()
                bar.update(len(job.rows(futures[future])))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return procs
    finally:
        bar.close()


def _space_message(folder: Path, needed: int, free: int) -> str:
    return (f"feature store {folder}: needs {needed / 2**30:.2f} GiB ({needed} bytes) but {free / 2**30:.2f} GiB "
            f"({free} bytes) are free there; free some space or point data.cache_dir elsewhere")


_WORKER_JOB: _Job | None = None
_CHUNKS_WRITTEN = 0


def _init_worker(job: _Job, parent: int, lock_fd: int) -> None:
    """Set up a forked decoder: one torch thread; no share in the build lock, and killed with the building
    process (else, after a ``kill -9`` of the build, idle decoders would keep the lock and block a relaunch)."""
    global _WORKER_JOB
    _WORKER_JOB = job
    torch.set_num_threads(1)
    with contextlib.suppress(OSError):
        os.close(lock_fd)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG (Linux)
    if os.getppid() != parent:  # the build died before prctl took effect
        os._exit(1)


def _worker_task(chunk: int) -> None:
    assert _WORKER_JOB is not None
    _decode_chunk(_WORKER_JOB, chunk)


def _decode_chunk(job: _Job, chunk: int) -> None:
    """Decode the items of one chunk and write its files. A bad item raises :class:`BadFileError`, or with
    ``on_bad_file=skip`` keeps its slot (zeros) and is recorded with ``ok: false``."""
    rows = job.rows(chunk)
    audio = np.zeros((len(rows), *job.spec.audio_shape), dtype=np.float16)
    visual = np.zeros((len(rows), *job.spec.visual_shape), dtype=np.uint8)
    records: list[dict[str, Any]] = []
    for j, row in enumerate(rows):
        try:
            fb, short, image = job.spec.decode(job.items[row])
            audio[j], visual[j] = fb.numpy(), image.numpy()
            records.append({"ok": True, "short": bool(short)})
        except Exception as exc:  # noqa: BLE001 - any decoding failure is a bad file
            path = exc.path if isinstance(exc, DecodeError) else f"{job.spec.name} item {row}"
            cause = exc.__cause__ if isinstance(exc, DecodeError) else exc
            reason = f"cannot decode: {type(cause).__name__}: {cause}"
            if job.spec.on_bad_file != "skip":
                raise BadFileError(f"{path}: {reason} (set data.on_bad_file=skip to skip it)") from exc
            records.append({"ok": False, "short": False, "path": path, "reason": reason})
    _write_chunk(job.folder, chunk, rows, {"audio": audio, "visual": visual}, records)


def _write_chunk(folder: Path, chunk: int, rows: range, arrays: dict[str, np.ndarray],
                 records: list[dict[str, Any]]) -> None:
    """npy files to temporary names, renamed; then the json (the chunk counts as written once it exists)."""
    global _CHUNKS_WRITTEN
    files: dict[str, dict[str, Any]] = {}
    moves: list[tuple[Path, Path]] = []
    try:
        for part, array in arrays.items():
            final = chunk_path(folder, chunk, f"{part}.npy")
            tmp = final.with_name(f"{final.name}.{os.getpid()}.tmp")
            moves.append((tmp, final))
            with open(tmp, "wb") as fh:
                writer = _HashingWriter(fh)
                np.save(writer, array, allow_pickle=False)
            stat = tmp.stat()
            files[part] = {"name": final.name, "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                           "sha256": writer.sha.hexdigest(), "dtype": str(array.dtype), "shape": list(array.shape)}
            _pause_for_tests()
        for tmp, final in moves:
            os.replace(tmp, final)
    except BaseException:
        for tmp, _ in moves:
            tmp.unlink(missing_ok=True)
        raise
    _write_json(chunk_path(folder, chunk, "json"),
                {"version": STORE_VERSION, "rows": [rows.start, rows.stop], "items": records, "files": files})
    _CHUNKS_WRITTEN += 1


def _pause_for_tests() -> None:
    """With ``$UVAV_STORE_PAUSE_AFTER=<n>:<marker>``: once this process has written ``n`` chunks, touch
    ``marker`` and sleep in the middle of the next one (a test then kills the process)."""
    spec = os.environ.get(PAUSE_ENV)
    if spec:
        n, marker = spec.split(":", 1)
        if _CHUNKS_WRITTEN == int(n):
            Path(marker).touch()
            time.sleep(600)


def _publish(job: _Job, settings: dict[str, Any]) -> dict[str, Any]:
    """Write ``store.json`` from the chunks' records: the store is complete from then on."""
    skipped, short, nbytes = [], [], 0
    for c in range(job.chunks):
        record = read_json(chunk_path(job.folder, c, "json"))
        assert record is not None, f"chunk {c} of {job.folder} vanished while publishing"
        for row, item in zip(job.rows(c), record["items"], strict=True):
            if not item["ok"]:
                skipped.append({"row": row, "path": item["path"], "reason": item["reason"]})
            if item["short"]:
                short.append(row)
        nbytes += sum(f["bytes"] for f in record["files"].values())
    n = len(job.items)
    meta = {
        "version": STORE_VERSION, "name": job.spec.name, "settings": settings, "items": n,
        "chunk_size": job.chunk_size, "chunks": job.chunks, "bytes": nbytes,
        "audio": {"shape": [n, *job.spec.audio_shape], "dtype": "float16"},
        "visual": {"shape": [n, *job.spec.visual_shape], "dtype": "uint8"},
        "skipped": skipped, "short_rows": short,
    }
    _write_json(job.folder / "store.json", meta)
    return meta


# ---------------------------------------------------------------- files
class _HashingWriter:
    """A write-only file wrapper that hashes what passes through (np.save writes to any ``.write``)."""

    def __init__(self, fh: Any) -> None:
        self.fh, self.sha = fh, hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        return self.fh.write(data)


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
