"""Shared fixtures: composing configs with tiny settings, and the real-data location."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from uvav.checks import register_configs
from uvav.config import config_dir
from uvav.models.classifier import AVClassifier

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "data.num_train=96", "data.num_val=48", "data.num_test=48", "trainer.epochs=1", "method.epochs=1",
    "trainer.batch_size=32", "trainer.progress=false", "backbone.embed_dim=32", "backbone.num_heads=2",
    "backbone.depth=1", "data.num_workers=0",
]

register_configs()


def compose_config(*overrides: str, tiny: bool = True) -> DictConfig:
    """The job config for these overrides (Hydra's own composition, no job run)."""
    with initialize_config_dir(config_dir(), version_base="1.3"):
        return compose("config", overrides=[*(TINY if tiny else []), *overrides], return_hydra_config=False)


def run_cli(tmp_path: Path, *args: str, check: bool = True, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m uvav.run`` in a subprocess, with outputs and caches under ``tmp_path``."""
    cmd = [sys.executable, "-m", "uvav.run", *args, f"paths.cache_dir={tmp_path / 'cache'}",
           f"hydra.run.dir={tmp_path / 'run'}", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    env = {**os.environ, "HYDRA_FULL_ERROR": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"uvav.run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def tiny_model(fusion_depth: int = 1) -> AVClassifier:
    """A small AVClassifier on 32x32 fbanks and 16 px images, built without a config."""
    return AVClassifier(num_classes=5, target_length=32, num_mel_bins=32, image_size=16, embed_dim=32,
                        num_heads=2, depth=1, shared_depth=1, fusion_depth=fusion_depth, patch_size=8,
                        image_patch_size=4)


@pytest.fixture
def tiny_cfg(tmp_path) -> DictConfig:
    cfg = compose_config(f"paths.cache_dir={tmp_path / 'cache'}")
    return cfg


def shared_fixture(*parts: str) -> Path:
    """A path under ``../shared/fixtures`` (reference outputs of other projects' code); skips the test when the
    fixtures are absent, fails it on CI."""
    path = REPO.parent.joinpath("shared", "fixtures", *parts)
    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"reference fixture required on CI: {path} not found")
        pytest.skip(f"reference fixture {path} not available")
    return path
