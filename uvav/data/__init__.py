"""Datasets: each is one module of this package (or a plugin module, see :mod:`uvav.registry`) that defines its
config schema (extending :class:`~uvav.config.DataConfig`), a loader returning an :class:`AVData` of normalised
features, and registers a :class:`Dataset`; its YAML is ``conf/data/<name>.yaml``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from uvav.registry import Registry

if TYPE_CHECKING:
    from uvav.data.base import AVData, AVSplit


@dataclass(frozen=True)
class Dataset:
    """What the rest of uvav needs to know about a dataset."""

    name: str
    schema: type  # the dataclass of data.<keys>
    load: Callable[[Any, str], AVData]  # (data config node, feature cache folder) -> AVData
    class_names: tuple[str, ...] | None = None  # known without loading (None: only from the data)
    decoded: bool = True  # features decoded from audio/image files (so predict can decode a user's files too);
    # False: generated already normalised, without normalisation statistics
    path_keys: tuple[str, ...] = ()  # data.<key>s holding file paths (resolved against the run's folder)
    # (root, verify_only, force) -> problems left: fetch and verify the dataset's files (python -m uvav.prepare)
    prepare: Callable[[str, bool, bool], list[str]] | None = None
    order: int = 100


# the modules of this package that hold the machinery every dataset shares (and import torch), not datasets
MACHINERY = ("base", "corrupting", "features", "loading", "store", "store_build")
DATASETS: Registry[Dataset] = Registry("dataset", __name__, machinery=MACHINERY)


def load_data(cfg: Any, cache_dir: str | None = None) -> AVData:
    """Build the dataset named by ``cfg.name`` (a ``data`` config group node); with ``data.label_fraction`` < 1,
    only that share of each class of the training split is kept."""
    data = DATASETS.get(cfg.name).load(cfg, cache_dir)
    fraction = cfg.get("label_fraction", 1.0)
    return data if fraction >= 1.0 else data.with_label_fraction(float(fraction), int(cfg.seed))


__all__ = ["DATASETS", "AVData", "AVSplit", "Dataset", "load_data"]


def __getattr__(name: str) -> Any:
    """``AVData`` and ``AVSplit`` (:mod:`uvav.data.base`), imported on first use: registering the datasets' schemas
    must not import torch."""
    if name in ("AVData", "AVSplit"):
        from uvav.data import base

        return getattr(base, name)
    raise AttributeError(f"module 'uvav.data' has no attribute {name!r}")
