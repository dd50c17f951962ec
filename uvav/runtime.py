"""Where and how a job computes: its device, its autocast, its threads and seeds."""

from __future__ import annotations

import contextlib
import os

import torch
from omegaconf import DictConfig

from uvav import distributed
from uvav.config import ConfigError
from uvav.data.loading import cores_per_rank


def select_device(name: str) -> torch.device:
    """``auto``: CUDA when available, else CPU. With several visible GPUs inside a Hydra multirun, job ``n`` gets
    ``cuda:{n % device_count}``, so that a local parallel launcher (joblib, submitit_local) spreads its jobs over
    the GPUs. Slurm jobs (submitit_slurm) see only the GPUs Slurm gave them (CUDA_VISIBLE_DEVICES), so one GPU per
    job comes from ``hydra.launcher.gpus_per_node=1``. A rank of a distributed job takes its local rank's GPU."""
    if distributed.active() and name in ("auto", "cuda") and torch.cuda.is_available():
        device = torch.device("cuda", distributed.local_rank() % torch.cuda.device_count())
        torch.cuda.set_device(device)
        return device
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        count = torch.cuda.device_count()
        if count > 1:
            from hydra.core.hydra_config import HydraConfig
            from hydra.types import RunMode

            if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
                return torch.device(f"cuda:{HydraConfig.get().job.num % count}")
        return torch.device("cuda")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={name} but CUDA is not available; use trainer.device=auto or cpu")
    return device


def autocast_for(device: torch.device, precision: str):
    """A zero-argument factory of the autocast context for this device and precision."""
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if use_bf16:
        return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def setup_runtime(cfg: DictConfig) -> torch.device:
    """Seed, threads, denormals and determinism as the config says; the job's device."""
    torch.manual_seed(cfg.seed)
    if cfg.trainer.num_threads:
        torch.set_num_threads(cfg.trainer.num_threads)
    elif distributed.local_world_size() > 1:  # the ranks on this machine share its cores
        torch.set_num_threads(cores_per_rank())
    torch.set_flush_denormal(True)  # denormal floats made CPU steps ~2.7x slower (docs/facts.md §7)
    if cfg.trainer.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    return select_device(cfg.trainer.device)
