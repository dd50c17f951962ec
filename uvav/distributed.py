"""One job on several processes: ``torch.distributed`` set-up and the few collectives the pipeline needs.

A job runs distributed when a launcher started its processes: ``torchrun`` (also ``srun torchrun`` under
Slurm) exports ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``/``MASTER_PORT``; a Slurm job with several
tasks started by submitit (``hydra/launcher=slurm_ddp``) gets them from
``submitit.helpers.TorchDistributedEnvironment``. Backends: NCCL for CUDA tensors, gloo for CPU tensors.
Training is ``DistributedDataParallel`` when there are several ranks (:mod:`uvav.train`); every rank reads
its share of each global batch and of each evaluation set; rank 0 alone writes files, logs and takes locks, and
decides what all ranks do next where a file could change between two looks (:func:`from_main`). Without a
launcher every function here is a no-op for one process.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import torch



log = logging.getLogger(__name__)
T = TypeVar("T")

TIMEOUT_ENV = "UVAV_DIST_TIMEOUT_S"  # how long a rank waits for the others (e.g. while rank 0 waits for a lock)


def launched() -> bool:
    """This process was started as one rank of several (torchrun, or submitit's Slurm tasks)."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return True
    return os.environ.get("SUBMITIT_EXECUTOR") == "slurm" and int(os.environ.get("SLURM_NTASKS", "1")) > 1


def setup() -> None:
    """Join the process group when :func:`launched` (once per process; later calls do nothing)."""
    if not launched() or _group() is not None:
        return
    import torch
    import torch.distributed as dist

    if "RANK" not in os.environ:  # a submitit Slurm task: export the env:// variables from Slurm's
        from submitit.helpers import TorchDistributedEnvironment

        TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    timeout = datetime.timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, 1800)))
    dist.init_process_group(backend=backend, timeout=timeout)
    atexit.register(_teardown)
    if not is_main():  # rank 0 reports; the others only warn
        logging.getLogger().setLevel(logging.WARNING)
    log.info("distributed: %d processes (%s)", world_size(), backend)


def _teardown() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def _group() -> Any:
    """``torch.distributed`` when this process joined a process group, else None. A process that has not imported
    torch yet has joined none: asking does not import torch (a config refused before any work stays light)."""
    dist = sys.modules.get("torch.distributed")
    return dist if dist is not None and dist.is_available() and dist.is_initialized() else None


def world_size() -> int:
    dist = _group()
    return dist.get_world_size() if dist else 1


def rank() -> int:
    dist = _group()
    return dist.get_rank() if dist else 0


def active() -> bool:
    """This process joined a process group (a launched job, even of one process)."""
    return _group() is not None


def is_main() -> bool:
    """Rank 0: the process that writes files, logs and holds locks."""
    return rank() == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0)) if active() else 0


def local_world_size() -> int:
    """Ranks on this machine (they share its cores and GPUs)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", world_size())) if active() else 1


def from_main(value: T) -> T:
    """Rank 0's ``value`` on every rank (a picklable object): one decision for all, e.g. "this file exists"."""
    import torch
    import torch.distributed as dist

    if world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0, device=torch.device("cpu"))  # through gloo
    return box[0]


def mean(value: torch.Tensor) -> torch.Tensor:
    """The mean of ``value`` over the ranks (a copy; ``value`` itself single-process)."""
    import torch.distributed as dist

    if world_size() == 1:
        return value
    total = value.detach().clone()
    dist.all_reduce(total)
    return total / world_size()


def sum_(value: torch.Tensor) -> torch.Tensor:
    """``value`` summed over the ranks, in place (a no-op single-process)."""
    import torch.distributed as dist

    if world_size() > 1:
        dist.all_reduce(value)
    return value


def barrier() -> None:
    import torch.distributed as dist

    if world_size() > 1:
        dist.barrier()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. building the feature store); the other ranks then run it on its result."""
    if not is_main():
        barrier()
    try:
        yield
    finally:
        if is_main():
            barrier()


def shard(indices: Sequence[int]) -> list[int]:
    """This rank's share of ``indices`` (every ``world_size``-th, from its rank): shards are disjoint and
    together hold every index once (evaluation counts are then summed over the ranks)."""
    return list(indices[rank()::world_size()])


def batch_parts(order: Sequence[int], batch_size: int) -> list[tuple[list[int], float]]:
    """This rank's part of each global batch of ``order`` (``batch_size`` samples, the last may be shorter),
    with the weight of its loss: ``rows x world / global rows``, so that DDP's mean of the ranks' gradients is
    the gradient of the global batch's mean loss. Parts are contiguous and differ by at most one row; a rank
    left without a row of a short last batch gets one repeated row with weight 0 (every rank must step)."""
    world, me = world_size(), rank()
    parts = []
    for start in range(0, len(order), batch_size):
        rows = list(order[start:start + batch_size])
        per, extra = divmod(len(rows), world)
        begin = me * per + min(me, extra)
        mine = rows[begin:begin + per + (me < extra)]
        parts.append((mine, len(mine) * world / len(rows)) if mine else (rows[:1], 0.0))
    return parts


def describe() -> dict[str, Any]:
    """The distributed set-up of this job, for ``metrics.json``."""
    import torch.distributed as dist

    if not active():
        return {"world_size": 1}
    backend = dist.get_backend()
    return {"world_size": world_size(), "backend": str(backend), "local_world_size": local_world_size()}


_launch_time: datetime.datetime | None = None


def launch_time(pattern: str) -> str:
    """The ``uvav_now`` resolver of run and sweep folders: like Hydra's ``now``, but on a distributed launch every
    rank gets rank 0's time (each rank resolving its own clock could name different folders), one per process."""
    global _launch_time
    if not launched():
        return datetime.datetime.now().strftime(pattern)
    if _launch_time is None:
        setup()
        _launch_time = from_main(datetime.datetime.now())
    return _launch_time.strftime(pattern)
