"""Shared fixtures: composing configs with tiny settings, one subprocess helper, the runs every reader shares, and
the real-data location."""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from filelock import FileLock
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
US8K_TINY = [
    "data=urbansound8k_av", "data.image_size=32", "data.target_length=64", "data.num_mel_bins=32",
    "trainer.epochs=1", "method.epochs=1", "trainer.batch_size=8", "trainer.progress=false",
    "backbone.embed_dim=32", "backbone.num_heads=2", "backbone.depth=1",
]
SHARED_RUN_FIXTURES = ("synthetic_runs", "us8k_runs")  # tests using them are marked slow (they train once)
SUBPROCESS_CALL = re.compile(r"\b(run_cli|run_module|_uvav_run|torchrun)\(")  # tests calling them: slow too

register_configs()


def compose_config(*overrides: str, tiny: bool = True) -> DictConfig:
    """The job config for these overrides (Hydra's own composition, no job run)."""
    with initialize_config_dir(config_dir(), version_base="1.3"):
        return compose("config", overrides=[*(TINY if tiny else []), *overrides], return_hydra_config=False)


def run_module(module: str, *args: str, cwd: Path, env: dict[str, str] | None = None, check: bool = True,
               full_error: bool = True, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m <module> <args>`` in ``cwd``: one torch thread, ``HYDRA_FULL_ERROR=1`` unless ``full_error`` is
    false (then as a user runs it), ``env`` added to the environment. ``check``: a non-zero exit fails the test."""
    base = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env = {**base, "OMP_NUM_THREADS": "1", **({"HYDRA_FULL_ERROR": "1"} if full_error else {}), **(env or {})}
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def run_cli(tmp_path: Path, *args: str, check: bool = True, timeout: int = 300,
            **kwargs: object) -> subprocess.CompletedProcess:
    """``python -m uvav.run`` in a subprocess, with outputs and caches under ``tmp_path`` (``run/``, ``sweep/``,
    ``cache/``; a ``paths.cache_dir=`` in ``args`` wins). ``kwargs`` go to :func:`run_module`."""
    cache = [] if any(a.startswith("paths.cache_dir=") for a in args) else [f"paths.cache_dir={tmp_path / 'cache'}"]
    return run_module("uvav.run", *args, *cache, f"hydra.run.dir={tmp_path / 'run'}",
                      f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path, check=check, timeout=timeout, **kwargs)


@contextlib.contextmanager
def logging_kept() -> Iterator[None]:
    """Undo what Hydra's logging setup does to this process (levels, handlers, e.g. a file handler into a run folder
    that is then removed), so that later tests log and ``caplog`` as before."""
    loggers = [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values()
                                      if isinstance(lg, logging.Logger))]
    saved = [(lg, lg.level, lg.handlers[:], lg.propagate, lg.disabled) for lg in loggers]
    try:
        yield
    finally:
        for lg, level, handlers, propagate, disabled in saved:
            for handler in lg.handlers:
                if handler not in handlers:
                    handler.close()
            lg.setLevel(level)
            lg.handlers[:] = handlers
            lg.propagate, lg.disabled = propagate, disabled


def main_in_process(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, module: str, *args: str,
                    cwd: Path) -> subprocess.CompletedProcess:
    """``python -m <module> <args>`` (no ``HYDRA_FULL_ERROR``) called in this process from ``cwd``, for a command
    that must refuse: its exit code, stdout and stderr, as :func:`run_module` gives them (seconds faster). The
    CLI's one-line-and-exit-2 contract itself is checked in a subprocess once (tests/test_user_errors.py)."""
    import importlib

    from uvav import errors

    entry = importlib.import_module(module)
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr(sys, "argv", [module, *args])
    monkeypatch.setattr(errors, "_TASK_STARTED", False)  # as in a fresh process: no job has started yet
    capsys.readouterr()
    with pytest.raises(SystemExit) as done, logging_kept():
        errors.run_entrypoint(entry.main)
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess([module, *args], done.value.code, out, err)


def runs_by_method(sweep: Path) -> dict[str, Path]:
    """The finished job folders of a sweep, by method."""
    return {json.loads((d / "metrics.json").read_text())["method"]: d for d in sorted(sweep.iterdir())
            if (d / "metrics.json").is_file()}


def shared_folder(tmp_path_factory: pytest.TempPathFactory, name: str, make: Callable[[Path], None]) -> Path:
    """A folder made once per test session by ``make`` (once for all pytest-xdist workers: a file lock guards it);
    tests read it and copy it before changing anything (``shutil.copytree``)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # shared by the workers
    folder = root / f"shared_{name}"
    with FileLock(f"{folder}.lock"):
        if not (folder / ".done").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            make(folder)
            (folder / ".done").touch()
    return folder


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))
            if p.is_file()}


def _unchanged(folder: Path) -> Iterator[Path]:
    """Yields ``folder``; then fails if a test changed, added or removed a file under it."""
    before = _listing(folder)
    yield folder
    changed = sorted(set(before.items()) ^ set(_listing(folder).items()))
    assert not changed, f"a test changed the shared runs (copy a run before writing into it): {changed[:5]}"


def _make_synthetic(folder: Path) -> None:
    run_cli(folder, "-m", "method=ft,pl", *TINY)


def _make_us8k(folder: Path) -> None:
    from .data.conftest import make_us8k

    make_us8k(folder / "us8k", per_class=4)
    run_cli(folder, "-m", "method=ft,pl", *US8K_TINY, f"data.root={folder / 'us8k'}")


@pytest.fixture(scope="session")
def synthetic_runs(tmp_path_factory) -> Iterator[dict[str, Path]]:
    """A tiny ``-m method=ft,pl`` sweep on the synthetic data (the PL job reuses the FT model): job folders by
    method, under ``<folder>/sweep``. Read-only (checked at the end): copy a run before changing it."""
    for folder in _unchanged(shared_folder(tmp_path_factory, "synthetic", _make_synthetic)):
        runs = runs_by_method(folder / "sweep")
        assert set(runs) == {"ft", "pl"}
        yield runs


@pytest.fixture(scope="session")
def us8k_runs(tmp_path_factory) -> Iterator[dict[str, Path]]:
    """A tiny FT run and a tiny PL run on a generated UrbanSound8K-AV layout (``<folder>/us8k``), by method.
    Read-only (checked at the end): copy a run before changing it."""
    for folder in _unchanged(shared_folder(tmp_path_factory, "us8k", _make_us8k)):
        runs = runs_by_method(folder / "sweep")
        assert set(runs) == {"ft", "pl"}
        yield runs


def pytest_configure(config: pytest.Config) -> None:
    """A pytest-xdist worker trains on one thread: the workers share the cores."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)


def _starts_a_run(func: Callable) -> bool:
    """Whether ``func``'s source calls a subprocess helper (:func:`run_cli`, :func:`run_module`, a module's own)."""
    try:
        return bool(SUBPROCESS_CALL.search(inspect.getsource(func)))
    except (OSError, TypeError):
        return False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """``slow``: tests on the shared runs (the first one trains them), and tests that call a subprocess helper
    themselves or through one of their fixtures."""
    for item in items:
        fixtures = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
        funcs = [getattr(item, "function", None), *(defs[-1].func for defs in fixtures.values())]
        if any(name in SHARED_RUN_FIXTURES for name in fixtures) or any(
                _starts_a_run(f) for f in funcs if f is not None and _in_tests(f)):
            item.add_marker(pytest.mark.slow)


def _in_tests(func: Callable) -> bool:
    return Path(inspect.getfile(func)).resolve().is_relative_to(REPO / "tests") and func.__name__ not in (
        "run_module", "run_cli")


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
