"""Datasets: each loader returns an :class:`~uvav.data.base.AVData` of normalised features."""

from __future__ import annotations

from uvav.data.base import AVData, AVSplit


def load_data(cfg, cache_dir: str | None = None) -> AVData:
    """Build the dataset named by ``cfg.name`` (a ``data`` config group node)."""
    if cfg.name == "synthetic":
        from uvav.data.synthetic import load_synthetic

        return load_synthetic(cfg)
    if cfg.name == "av_mnist":
        from uvav.data.av_mnist import load_av_mnist

        return load_av_mnist(cfg, cache_dir)
    if cfg.name == "urbansound8k_av":
        from uvav.data.urbansound8k_av import load_urbansound8k_av

        return load_urbansound8k_av(cfg, cache_dir)
    if cfg.name == "cavmae_json":
        from uvav.data.cavmae_json import load_cavmae_json

        return load_cavmae_json(cfg, cache_dir)
    raise ValueError(f"unknown dataset {cfg.name!r}: synthetic, av_mnist, urbansound8k_av or cavmae_json")


__all__ = ["AVData", "AVSplit", "load_data"]
