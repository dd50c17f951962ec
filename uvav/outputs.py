"""Run outputs: atomic writes, locks, and finding earlier work by its config.

The run record (``metrics.json``: every key, its type and its version) is :mod:`uvav.record`, with its one writer
and reader.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import io
import json
import logging
import os
import platform
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from uvav.errors import LockError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename: readers see all or nothing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n").encode())


def _torch_bytes(obj: Any) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def atomic_torch_save(path: str | Path, obj: Any) -> str:
    """``torch.save`` atomically; returns the sha256 of the bytes written (hashed in memory, no re-read)."""
    data = _torch_bytes(obj)
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _recorded_hashes(path: Path) -> set[str]:
    try:
        return set(_sidecar(path).read_text().split())
    except OSError:
        return set()


def save_checkpoint(path: str | Path, obj: Any) -> None:
    """A resumable checkpoint and its ``<name>.sha256`` sidecar. While the file is replaced the sidecar accepts the
    old and the new bytes, so a kill at any instant leaves a checkpoint its sidecar vouches for."""
    path = Path(path)
    data = _torch_bytes(obj)
    digest = hashlib.sha256(data).hexdigest()
    current = _recorded_hashes(path) if path.exists() else set()
    atomic_write_bytes(_sidecar(path), ("\n".join(sorted(current | {digest})) + "\n").encode())
    atomic_write_bytes(path, data)
    atomic_write_bytes(_sidecar(path), (digest + "\n").encode())


def load_checkpoint(path: str | Path) -> Any | None:
    """The checkpoint at ``path`` when its bytes match a sha256 its sidecar records; else None, with a WARNING
    naming the file, and both files removed (the stage restarts). Reads the file once."""
    import torch

    path = Path(path)
    if not path.exists():
        return None
    data = path.read_bytes()
    recorded = _recorded_hashes(path)
    if hashlib.sha256(data).hexdigest() not in recorded:
        log.warning("%s does not match the sha256 recorded when it was written (%s): discarded, the stage restarts",
                    path, "edited or damaged" if recorded else "no sidecar")
        path.unlink(missing_ok=True)
        _sidecar(path).unlink(missing_ok=True)
        return None
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def remove_checkpoint(path: str | Path) -> None:
    path = Path(path)
    path.unlink(missing_ok=True)
    _sidecar(path).unlink(missing_ok=True)


def copy_hashed(src: str | Path, dst: str | Path) -> str:
    """Copy ``src`` to ``dst`` (atomically replaced; a file of its own, never a link into the cache) and return
    the sha256 of the bytes copied: one read both copies and proves them."""
    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    try:
        with open(src, "rb") as source, os.fdopen(fd, "wb") as target:
            for block in iter(lambda: source.read(1 << 22), b""):
                h.update(block)
                target.write(block)
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return h.hexdigest()


def _jsonable(value: Any) -> Any:
    import torch

    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.Tensor):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """An exclusive inter-process lock (``flock``) on ``path``; released on exit, also when the holder dies."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise LockError(f"{path}: cannot create this lock file ({exc.strerror or exc}); its folder must be a "
                        "writable folder (paths.cache_dir, or the run folder)") from exc
    with handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read in 4 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def fingerprint(obj: Any) -> str:
    """A short, stable hash of a JSON-able object (a resolved config section)."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def read_json(path: str | Path) -> dict[str, Any] | None:
    """The JSON object at ``path``, or None when it is absent, partial or not an object."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def environment(device: torch.device) -> dict[str, Any]:
    """Where and with what a number was measured."""
    import hydra
    import timm
    import torch
    import torchaudio

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
    return {
        "device": str(device),
        "device_name": name,
        "cpu_threads": torch.get_num_threads(),
        "host": platform.node(),
        "python": platform.python_version(),
        "git_commit": _git_commit(),
        "versions": {
            "torch": torch.__version__, "torchaudio": torchaudio.__version__, "timm": timm.__version__,
            "hydra": hydra.__version__, "uvav": _uvav_version(),
        },
    }


def provenance() -> dict[str, Any]:
    """What made a stored model: the uvav checkout's commit (``git describe``-like: the commit, ``+dirty`` with
    uncommitted changes), else the installed uvav version; torch's and timm's versions."""
    import timm
    import torch

    return {"uvav": _git_commit() or _uvav_version(), "torch": str(torch.__version__), "timm": str(timm.__version__)}


def _uvav_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("uvav")
    except PackageNotFoundError:
        return "unknown"


@functools.lru_cache(maxsize=1)
def _git_commit() -> str | None:
    """The checkout's commit (with ``+dirty`` when it has uncommitted changes), or None outside a checkout."""
    import subprocess

    repo = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=5,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")
