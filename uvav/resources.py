"""Time and memory measurement: one implementation for jobs (``metrics.json``) and the resource benchmark.

Time: wall-clock seconds of each training epoch (forward, backward, optimizer; no validation), with CUDA
synchronised; reported as the median over the epochs after the first (the first pays warm-up costs).

Memory ("peak training memory"):
- CUDA: ``torch.cuda.max_memory_allocated`` over the training epochs (reset before the first), i.e. the peak
  of bytes held by live tensors on the device: weights, gradients, optimizer state, activations, batches.
- CPU: process RSS cannot separate training from data and runtime, so we count tensors instead:
  :class:`LiveTensorBytes` (a ``TorchDispatchMode``) follows every tensor storage alive during one training
  step (the first step of the second epoch, when optimizer state exists) and reports the peak of
  parameters + buffers + gradients + optimizer state + the batch + activations + temporaries, i.e. what
  ``max_memory_allocated`` would report for that step on a GPU.
  Tensors that live outside the step (the dataset, cached features) are not in this figure; cached features
  are reported separately as ``cache_bytes``.

Memory of a whole job (``experiments/scale_benchmark.py``): :class:`PeakMemory` samples :func:`tree_memory`, the
process tree's Pss_Anon + Pss_Shmem from ``/proc/<pid>/smaps_rollup`` (DataLoader workers included, file cache
and memory-mapped files excluded), beside its RSS. Linux only.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

CPU_METHOD = (
    "peak bytes of live tensors (params, buffers, grads, optimizer state, activations, temporaries) during one "
    "training step (first step of epoch 2), counted per storage by uvav.resources.LiveTensorBytes"
)
CUDA_METHOD = "torch.cuda.max_memory_allocated over all training epochs (reset before the first)"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class ResourceMeter:
    """Collects epoch times and the peak training memory of one training stage."""

    device: torch.device
    epoch_times: list[float] = field(default_factory=list)
    peak_bytes: int | None = None
    method: str = ""
    cache: dict[str, Any] | None = None  # cached frozen features: views, bytes, build_s (one-off, not in epochs)
    peak_reserved_bytes: int | None = None  # CUDA only: the caching allocator's peak reservation
    resident_cache_bytes: int = 0  # cached encoder outputs on the device, left out of peak_bytes

    def begin_training(self, resident_cache_bytes: int = 0) -> None:
        """Start the memory measurement. ``resident_cache_bytes``: cached encoder outputs kept on the device,
        reported in ``cached_features`` and left out of the peak (as when the cache lived in host memory)."""
        self.resident_cache_bytes = resident_cache_bytes
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.method = CUDA_METHOD + (" minus the cached encoder outputs held on the device"
                                         if resident_cache_bytes else "")

    @contextmanager
    def epoch(self) -> Iterator[None]:
        sync(self.device)
        start = time.perf_counter()
        yield
        sync(self.device)
        self.epoch_times.append(time.perf_counter() - start)

    def end_training(self) -> None:
        if self.device.type == "cuda":
            self.peak_bytes = int(torch.cuda.max_memory_allocated(self.device)) - self.resident_cache_bytes
            self.peak_reserved_bytes = int(torch.cuda.max_memory_reserved(self.device))

    def wants_step_measurement(self, epoch: int, step: int, total_epochs: int) -> bool:
        """On CPU: measure the first step of the second epoch (or of the first, in a one-epoch run)."""
        return self.device.type == "cpu" and self.peak_bytes is None and step == 0 and (
            epoch == 1 or total_epochs == 1
        )

    def measure_step(
        self, step: Callable[[], Any], modules: list[torch.nn.Module], optimizer: torch.optim.Optimizer,
        inputs: tuple[torch.Tensor, ...] = (),
    ) -> Any:
        """Run one training step under the CPU tensor tracker and record its peak."""
        peak, result = track_peak_bytes(step, modules, optimizer, inputs)
        self.peak_bytes, self.method = peak, CPU_METHOD
        return result

    def summary(self) -> dict[str, Any]:
        later = self.epoch_times[1:] or self.epoch_times
        return {
            "time_per_epoch_s": statistics.median(later) if later else None,
            "time_method": "median wall-clock of training epochs after the first (no validation)",
            "epoch_times_s": [round(t, 4) for t in self.epoch_times],
            "peak_train_memory_bytes": self.peak_bytes,
            "memory_method": self.method or "not measured",
            "device": str(self.device),
            "cached_features": self.cache,
            "peak_reserved_bytes": self.peak_reserved_bytes,
        }


class LiveTensorBytes(TorchDispatchMode):
    """Counts the bytes of distinct tensor storages alive while the mode is active, and their peak.

    Every tensor an operator returns is registered once per storage; a finalizer subtracts it when the
    storage is freed. Tensors that exist before (weights, optimizer state, the batch) are added with
    :meth:`add`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._alive: set[int] = set()

    def add(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key == 0 or key in self._alive:
            return
        size = storage.nbytes()
        self._alive.add(key)
        self.live += size
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._free, key, size)

    def _free(self, key: int, size: int) -> None:
        if key in self._alive:
            self._alive.discard(key)
            self.live -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for item in tree_flatten(out)[0]:
            if isinstance(item, torch.Tensor) and item.device.type == "cpu":
                self.add(item)
        return out


def track_peak_bytes(
    step: Callable[[], Any], modules: list[torch.nn.Module], optimizer: torch.optim.Optimizer,
    inputs: tuple[torch.Tensor, ...] = (),
) -> tuple[int, Any]:
    """Peak bytes of live CPU tensors while ``step()`` runs, counting the modules' parameters, buffers and
    gradients, the optimizer state and ``inputs`` that exist before it."""
    tracker = LiveTensorBytes()
    for module in modules:
        for tensor in (*module.parameters(), *module.buffers()):
            tracker.add(tensor)
            if tensor.grad is not None:
                tracker.add(tensor.grad)
    for state in optimizer.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor) and value.numel() > 1:
                tracker.add(value)
    for tensor in inputs:
        tracker.add(tensor)
    with tracker:
        result = step()
    return tracker.peak, result


# --- Memory of a whole process tree (a job and its DataLoader / decode workers) ------------------------------------

TREE_MEMORY_METHOD = (
    "peak over samples of the process tree's summed Pss_Anon + Pss_Shmem (memory that cannot be dropped as file "
    "cache) from /proc/<pid>/smaps_rollup, read whenever /proc/<pid>/status's RssAnon + RssShmem (an upper bound, "
    "cheap to read) exceeds the peak so far; beside the peak of summed RSS (VmRSS)"
)
_ROLLUP_FIELDS = {"Rss": "rss", "Pss": "pss", "Pss_Anon": "pss_anon", "Pss_File": "pss_file",
                  "Pss_Shmem": "pss_shmem", "SwapPss": "swap_pss"}


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its live descendants (``pid`` first), from ``/proc/<p>/task/*/children`` where the kernel
    provides it (CONFIG_PROC_CHILDREN), else from the parent ids in ``/proc/*/stat``. Linux only."""
    tasks = Path(f"/proc/{pid}/task")
    children_files = list(tasks.glob("*/children")) if tasks.is_dir() else []
    if children_files:
        tree, todo = [pid], [pid]
        while todo:
            parent = todo.pop()
            for children in Path(f"/proc/{parent}/task").glob("*/children"):
                try:
                    found = [int(c) for c in children.read_text().split()]
                except OSError:  # the task or process ended meanwhile
                    continue
                new = [c for c in found if c not in tree]
                tree += new
                todo += new
        return tree
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        # "<pid> (<comm>) <state> <ppid> ...": comm may hold spaces and parentheses, so split after the last ")"
        fields = text[text.rfind(")") + 2:].split()
        if len(fields) >= 2:
            parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [pid], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in tree:
                tree.append(child)
                todo.append(child)
    return tree


def read_smaps_rollup(pid: int) -> dict[str, int] | None:
    """One process's ``/proc/<pid>/smaps_rollup`` in bytes (rss, pss, pss_anon, pss_file, pss_shmem, swap_pss),
    or None when the process has gone (or is a zombie, or cannot be read)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:  # gone (ProcessLookupError / FileNotFoundError) or not readable
        return None
    values = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        key = _ROLLUP_FIELDS.get(name)
        if key is not None:
            parts = rest.split()
            values[key] = int(parts[0]) * (1024 if len(parts) > 1 and parts[1] == "kB" else 1)
    return values or None


def tree_memory(pid: int) -> dict[str, int]:
    """Memory of ``pid`` and its descendants, summed over the processes from ``/proc/<p>/smaps_rollup``, in bytes.

    Returns ``pss_anon``, ``pss_shmem``, ``held`` (= pss_anon + pss_shmem), ``pss``, ``pss_file``, ``rss``,
    ``swap_pss`` and ``processes`` (how many were read; processes that end while being read are skipped).

    What the figures mean:

    - ``held``: anonymous memory (heap, tensors, numpy arrays, Python objects) plus shared memory (``/dev/shm``
      and ``MAP_SHARED|MAP_ANONYMOUS``, which torch uses to pass DataLoader batches between processes). The
      kernel cannot drop these pages without swap, so this is the memory the job needs.
    - Not in ``held``: ``pss_file``, pages of memory-mapped files (e.g. a feature store read through
      ``np.memmap`` / ``torch.from_file``, shared libraries) and of the page cache. The kernel drops clean file
      pages under memory pressure and reads them again when needed, so they count towards RSS but are not held.
    - Pss (proportional set size) divides each page by the number of processes mapping it; forked DataLoader
      workers share the parent's pages copy-on-write, so the sum of Pss over the tree counts every physical page
      once. The sum of ``rss`` counts a shared page once per process mapping it, so it overstates what a tree
      of forked workers uses (it is reported for comparison with tools that show RSS).
    - Not counted: files in ``/dev/shm`` or ``tmpfs`` that no process of the tree maps, kernel memory, and
      memory already swapped out (``swap_pss``, reported apart).
    """
    total = dict.fromkeys(_ROLLUP_FIELDS.values(), 0)
    count = 0
    for p in process_tree(pid):
        values = read_smaps_rollup(p)
        if values is None:
            continue
        count += 1
        for key, value in values.items():
            total[key] += value
    total["held"] = total["pss_anon"] + total["pss_shmem"]
    total["processes"] = count
    return total


def tree_status(pid: int) -> dict[str, int]:
    """Cheap counters of ``pid`` and its descendants from ``/proc/<p>/status``, summed, in bytes: ``held_bound``
    (RssAnon + RssShmem, never below :func:`tree_memory`'s ``held``: a page's Pss is at most its Rss), ``rss``
    (VmRSS) and ``processes``. Unlike ``smaps_rollup``, which walks every mapped page (~60 ms for a job with 3.9 GB
    resident on 2 cores), the kernel keeps these as counters."""
    fields = {"RssAnon": "held_bound", "RssShmem": "held_bound", "VmRSS": "rss"}
    total = {"held_bound": 0, "rss": 0, "processes": 0}
    for p in process_tree(pid):
        try:
            text = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        found = False
        for line in text.splitlines():
            name, _, rest = line.partition(":")
            if name in fields:
                total[fields[name]] += int(rest.split()[0]) * 1024
                found = True
        total["processes"] += found  # a zombie has no memory lines
    return total


class PeakMemory:
    """Samples the memory of ``pid`` (default: this process) and its descendants every ``interval`` seconds in a
    background thread and records the peaks: ``peak_held`` (the largest summed Pss_Anon + Pss_Shmem of the tree at
    one sample time, :func:`tree_memory`), ``peak_rss`` (the largest summed RSS at one sample time),
    ``processes_at_peak`` (how many processes the tree had at the peak-held sample) and the samples at both peaks.

    Each tick reads the cheap :func:`tree_status` and reads ``smaps_rollup`` (:func:`tree_memory`) only when its
    upper bound of held memory exceeds the peak so far, so the peak is what reading ``smaps_rollup`` every tick
    would give, without its cost: read every 0.25 s, it took ~12% of a core beside a job with 3.9 GB resident
    (more as the mapped files grow), from the job being measured.

    A sampler misses spikes shorter than ``interval``; the figures are lower bounds of the true peaks. With
    ``keep_samples=True``, ``timeline`` holds every tick as (seconds since start, held or None where
    ``smaps_rollup`` was not read, the upper bound of held, rss, processes).

        proc = subprocess.Popen(cmd)
        with PeakMemory(proc.pid) as peak:
            proc.wait()
        peak.summary()  # {"peak_held_bytes": ..., "peak_rss_bytes": ..., ...}
    """

    def __init__(self, pid: int | None = None, interval: float = 0.25, keep_samples: bool = False) -> None:
        self.pid = os.getpid() if pid is None else pid
        self.interval = interval
        self.keep_samples = keep_samples
        self.timeline: list[tuple[float, int | None, int, int, int]] = []
        self.peak_held = 0
        self.peak_rss = 0
        self.processes_at_peak = 0
        self.at_peak_held: dict[str, float] = {}  # the sample at the peak, with at_s: seconds since start
        self.at_peak_rss: dict[str, float] = {}
        self.samples = 0
        self.full_samples = 0  # ticks that read smaps_rollup
        self.duration_s = 0.0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._started = 0.0

    def sample(self) -> dict[str, int]:
        """Take one full sample (:func:`tree_memory`) now and update the peaks (safe beside the thread)."""
        return self._tick(force=True) or tree_memory(self.pid)

    def _tick(self, force: bool = False) -> dict[str, int] | None:
        """One tick: the cheap counters, and ``smaps_rollup`` when they could beat the peak (or ``force``); returns
        the full sample when one was taken."""
        bound = tree_status(self.pid)
        if bound["processes"] == 0:
            return None
        current = tree_memory(self.pid) if force or bound["held_bound"] > self.peak_held else None
        at = round(time.perf_counter() - self._started, 3) if self._started else 0.0
        with self._lock:
            self.samples += 1
            self.full_samples += current is not None
            if self.keep_samples:
                self.timeline.append((at, current["held"] if current else None, bound["held_bound"], bound["rss"],
                                      bound["processes"]))
            if current is not None and current["held"] > self.peak_held:
                self.peak_held, self.processes_at_peak = current["held"], current["processes"]
                self.at_peak_held = {**current, "at_s": at}
            if bound["rss"] > self.peak_rss:
                self.peak_rss, self.at_peak_rss = bound["rss"], {**bound, "at_s": at}
        return current

    def _run(self) -> None:
        while not self._stop.is_set():
            self._tick()
            self._stop.wait(self.interval)

    def start(self) -> PeakMemory:
        self._stop.clear()
        self._started = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="PeakMemory", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> dict[str, Any]:
        """Stop sampling (after one last sample) and return :meth:`summary`."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            self._tick()
            self.duration_s += time.perf_counter() - self._started
        return self.summary()

    def __enter__(self) -> PeakMemory:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def summary(self) -> dict[str, Any]:
        return {
            "peak_held_bytes": self.peak_held, "peak_rss_bytes": self.peak_rss,
            "processes_at_peak": self.processes_at_peak, "at_peak_held": self.at_peak_held,
            "at_peak_rss": self.at_peak_rss, "samples": self.samples, "full_samples": self.full_samples,
            "interval_s": self.interval,
            "duration_s": round(self.duration_s, 2), "method": TREE_MEMORY_METHOD,
        }
