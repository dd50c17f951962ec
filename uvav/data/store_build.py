"""Building the on-disk feature store (:mod:`uvav.data.store`, which describes its files and reads them).

Decoding runs on ``data.num_workers`` forked processes (default: every core this process may use), one torch
thread each; each decodes and writes whole chunks, so no arrays travel between processes. The free disk space
is checked against what remains to be written before decoding starts (:class:`~uvav.data.store.StoreSpaceError`).

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
import math
import multiprocessing as mp
import os
import secrets
import shutil
import signal
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from uvav.data.features import BadFileError, DecodeError, cache_key, check_choice, one_torch_thread
from uvav.data.loading import resolve_workers
from uvav.data.store import (
    STORE_VERSION,
    FeatureStore,
    StoreSpaceError,
    StoreSpec,
    _try_write,
    _write_json,
    chunk_path,
    content_digest,
)
from uvav.outputs import file_sha256, read_json

CHUNK_SIZE = 64  # items per chunk: ~26 MB at 1024x128 fbank + 224 px; many chunks keep every worker busy
PAUSE_ENV = "UVAV_STORE_PAUSE_AFTER"  # tests: "<n>:<marker>" stops a build before its chunk n+1 is complete


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
        audio_bytes = np.dtype(self.spec.audio_dtype).itemsize * math.prod(self.spec.audio_shape)
        per_item = audio_bytes + self.spec.frames * math.prod(self.spec.visual_shape) + 128
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
        todo, repaired = [], []
        for c in range(job.chunks):
            problem = _chunk_problem(job, c, verify)
            if problem and (meta is not None or chunk_path(folder, c, "json").exists()):
                warnings.warn(f"feature store {folder}: {problem}; rebuilding chunk {c}", stacklevel=2)
                report["chunks_rebuilt"] += 1
                repaired.append(c)
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
                _mark_repaired(job, repaired)
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


def _mark_repaired(job: _Job, chunks: list[int]) -> None:
    """Give each chunk rebuilt because it was damaged a new ``repair`` id, so the store's content digest changes
    and what was trained on the damaged chunk is not reused."""
    for c in chunks:
        path = chunk_path(job.folder, c, "json")
        record = read_json(path)
        if record is not None:
            _write_json(path, {**record, "repair": secrets.token_hex(8)})


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
    audio = np.zeros((len(rows), *job.spec.audio_shape), dtype=job.spec.audio_dtype)
    visual = np.zeros((len(rows), job.spec.frames, *job.spec.visual_shape), dtype=np.uint8)
    records: list[dict[str, Any]] = []
    for j, row in enumerate(rows):
        try:
            fb, short, image = job.spec.decode(job.items[row])
            audio[j], visual[j] = fb.numpy(), image.numpy().reshape(visual.shape[1:])  # [3, S, S]: one frame
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
        "audio": {"shape": [n, *job.spec.audio_shape], "dtype": job.spec.audio_dtype},
        "visual": {"shape": [n, job.spec.frames, *job.spec.visual_shape], "dtype": "uint8"},
        "skipped": skipped, "short_rows": short, "content_digest": content_digest(job.folder, job.chunks),
    }
    _write_json(job.folder / "store.json", meta)
    return meta


class _HashingWriter:
    """A write-only file wrapper that hashes what passes through (np.save writes to any ``.write``)."""

    def __init__(self, fh: Any) -> None:
        self.fh, self.sha = fh, hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        return self.fh.write(data)
