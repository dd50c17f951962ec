"""A dataset that fails on demand, to inject a job's crash whatever the machine: the synthetic data, except that
``data.fail=true`` raises a RuntimeError (a crash, not a user error) when a job loads it. Registered when imported:
``UVAV_PLUGINS=tests.plugins.faulty`` (plus ``conf/data/faulty.yaml`` on ``hydra.searchpath``)."""

from __future__ import annotations

from dataclasses import dataclass

from uvav.data import DATASETS, AVData, Dataset
from uvav.data.synthetic import CLASS_NAMES, SyntheticDataConfig, load_synthetic


@dataclass
class FaultyConfig(SyntheticDataConfig):
    name: str = "faulty"
    fail: bool = False


def load_faulty(cfg, cache_dir: str | None = None) -> AVData:
    if cfg.fail:
        raise RuntimeError("injected fault: data.fail=true")
    return load_synthetic(cfg, cache_dir)


DATASETS.register(Dataset("faulty", FaultyConfig, load_faulty, class_names=tuple(CLASS_NAMES), decoded=False))
