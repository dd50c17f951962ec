"""Frozen-base encoder outputs kept across jobs, under ``<paths.cache_dir>/encodings/<key>/``.

A job whose frozen base is a stored FT model writes its shared encodings (validation and test under every case,
the cached training views) into this store instead of its own folder, keyed by what they are a function of: the
FT model's key and weights, the data's content digest, the corruption settings and draws, the batch size, the
precision, the device type and the torch version. The next job on the same base (an Optuna trial, another method
of a ``-m`` sweep) opens them instead of encoding again, with the same bytes, so its numbers are those of a job
that encoded for itself.

- **Locking**, as for FT models: the first job to need an entry builds it under an exclusive ``flock``, the others
  wait and then open it. A job holds a shared lock on every entry it uses until it ends, so that no other job
  removes it meanwhile; jobs that only read an entry share it at once.
- **Disk budget** (``paths.encodings_gb``; 0 keeps nothing across jobs): after adding an entry, the least recently
  used entries that no job holds are removed until the store fits. An entry a crash left unfinished (no
  ``complete`` marker) is built again.
"""

from __future__ import annotations

import fcntl
import json
import logging
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from uvav.errors import LockError
from uvav.outputs import fingerprint
from uvav.train.token_cache import TokenCache

log = logging.getLogger(__name__)

COMPLETE = "complete"  # written last; its mtime is the entry's last use


class EncodingStore:
    """The encodings folder of ``paths.cache_dir``, holding at most ``budget_gb`` (entries in use excepted)."""

    def __init__(self, root: Path, budget_gb: float) -> None:
        self.root, self.budget_bytes = Path(root), budget_gb * 2**30
        self._held: dict[str, Any] = {}  # key: the open lock file (a shared lock) of an entry this job uses

    def get(self, spec: dict[str, Any], build: Callable[[Path], Sequence[TokenCache]], device: torch.device,
            budget_bytes: float) -> tuple[list[TokenCache], bool]:
        """The caches of the entry keyed by ``spec`` and whether they were found: opened from the store (on
        ``device`` when they fit in ``budget_bytes``), else made by ``build(folder)`` (file-backed caches written
        under ``folder``) and kept."""
        key = fingerprint(spec)
        folder = self.root / key
        if key in self._held:  # this job made or opened it already (and holds it)
            return self._open(folder, device, budget_bytes), True
        handle = self._lock(key)
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH)  # waits while another job builds it
            found = (folder / COMPLETE).exists()
            if not found:  # build it, unless another job did between the two locks
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
                found = (folder / COMPLETE).exists()
            if found:
                log.info("encodings (%s) reused from %s", spec.get("what", key), folder)
            else:
                shutil.rmtree(folder, ignore_errors=True)  # what a crashed job left unfinished
                built = list(build(folder))
                for cache in built:
                    cache.keep()
                    cache.close()
                names = [cache.folder.relative_to(folder).as_posix() for cache in built]
                (folder / "spec.json").write_text(json.dumps(spec, indent=2, sort_keys=True, default=str) + "\n")
                (folder / COMPLETE).write_text(json.dumps({"parts": names}) + "\n")
            (folder / COMPLETE).touch()  # its last use
            caches = self._open(folder, device, budget_bytes)
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH)  # in use until the job ends
        except BaseException:
            handle.close()
            raise
        self._held[key] = handle
        if not found:
            self.evict(keep=key)
        return caches, found

    @staticmethod
    def _open(folder: Path, device: torch.device, budget_bytes: float) -> list[TokenCache]:
        caches = []
        for name in json.loads((folder / COMPLETE).read_text())["parts"]:
            caches.append(TokenCache.open(folder / name, device, budget_bytes))
            budget_bytes -= caches[-1].nbytes if caches[-1].on_device else 0
        return caches

    def _lock(self, key: str):
        path = self.root / f"{key}.lock"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            return open(path, "a+")  # noqa: SIM115 - held until release()
        except OSError as exc:
            raise LockError(f"{path}: cannot create this lock file ({exc.strerror or exc}); paths.cache_dir must "
                            "be a writable folder") from exc

    def evict(self, keep: str | None = None) -> list[str]:
        """Remove least recently used entries that no job holds until the store fits its budget (unfinished
        entries first); returns the keys removed."""
        entries = []
        for folder in (p for p in self.root.iterdir() if p.is_dir()) if self.root.exists() else ():
            marker = folder / COMPLETE
            used = marker.stat().st_mtime if marker.exists() else 0.0  # unfinished: oldest
            entries.append((used, folder, sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())))
        total, removed = sum(size for *_, size in entries), []
        for _, folder, size in sorted(entries, key=lambda e: e[0]):
            if total <= self.budget_bytes:
                break
            if folder.name == keep or folder.name in self._held or not self._remove_unused(folder):
                continue
            total -= size
            removed.append(folder.name)
        if removed:
            log.info("encodings store %s: removed %d least recently used entries to stay within %.1f GB",
                     self.root, len(removed), self.budget_bytes / 2**30)
        return removed

    def _remove_unused(self, folder: Path) -> bool:
        lock = folder.with_name(f"{folder.name}.lock")
        with open(lock, "a+") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # a job uses it (or builds it)
            shutil.rmtree(folder, ignore_errors=True)  # the lock file stays: a waiting job may hold it open
        return True

    def close(self) -> None:
        """Let other jobs remove this job's entries again."""
        for handle in self._held.values():
            handle.close()
        self._held.clear()
