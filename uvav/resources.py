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
"""

from __future__ import annotations

import statistics
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
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

    def begin_training(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.method = CUDA_METHOD

    @contextmanager
    def epoch(self) -> Iterator[None]:
        sync(self.device)
        start = time.perf_counter()
        yield
        sync(self.device)
        self.epoch_times.append(time.perf_counter() - start)

    def end_training(self) -> None:
        if self.device.type == "cuda":
            self.peak_bytes = int(torch.cuda.max_memory_allocated(self.device))
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
