"""Shared fixtures: composing configs with tiny settings, one subprocess helper, the runs every reader shares, and
the real-data location."""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import logging
import os
import re
import runpy
import shutil
import subprocess
import sys
import tempfile
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from filelock import FileLock
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from uvav.checks import register_configs
from uvav.config import config_dir

if TYPE_CHECKING:  # torch and timm: imported by the tests that need them (pytest's own process does not)
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
# marked slow: tests using these fixtures (the shared runs train once; a real tracking server), and tests that run a
# command or start a process (a job, an interpreter, a server)
SLOW_FIXTURES = ("synthetic_runs", "us8k_runs", "mlflow_server")
STARTS_A_RUN = re.compile(r"\b(run_cli|run_module|start_module|_uvav_run|torchrun)\(|\bsubprocess\.(run|Popen)\(")

register_configs()


def compose_config(*overrides: str, tiny: bool = True) -> DictConfig:
    """The job config for these overrides (Hydra's own composition, no job run)."""
    with initialize_config_dir(config_dir(), version_base="1.3"):
        return compose("config", overrides=[*(TINY if tiny else []), *overrides], return_hydra_config=False)


def run_module(module: str, *args: str, cwd: Path, env: dict[str, str] | None = None, check: bool = True,
               full_error: bool = True, timeout: int = 300, fresh: bool = False) -> subprocess.CompletedProcess:
    """``python -m <module> <args>`` in ``cwd``: one torch thread, ``HYDRA_FULL_ERROR=1`` unless ``full_error`` is
    false (then as a user runs it), ``env`` added to the environment. ``check``: a non-zero exit fails the test.

    It runs in this process as ``python -m`` would (:func:`runpy.run_module`; a new interpreter spends ~5 s of CPU
    importing torch and timm), and what it changes here is put back (:func:`_process_kept`); ``fresh``: in a
    subprocess, with ``timeout`` (a launcher's workers, a process-wide tracker, the CLI's own contract)."""
    if fresh:
        started = start_module(module, *args, cwd=cwd, env=env, full_error=full_error, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        try:
            out, err = started.communicate(timeout=timeout)
        finally:
            started.kill()
            started.wait()
        proc = subprocess.CompletedProcess(started.args, started.returncode, out, err)
    else:
        env = _command_env(env, full_error)
        out, err, code = io.StringIO(), io.StringIO(), 0
        with _process_kept(module, args, cwd, env), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                runpy.run_module(module, run_name="__main__", alter_sys=True)
            except SystemExit as done:
                code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
                if isinstance(done.code, str):
                    print(done.code, file=sys.stderr)
            except Exception:  # what the interpreter prints before it exits with 1
                traceback.print_exc()
                code = 1
        proc = subprocess.CompletedProcess([module, *args], code, out.getvalue(), err.getvalue())
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def start_module(module: str, *args: str, cwd: Path, env: dict[str, str] | None = None, full_error: bool = True,
                 **popen: Any) -> subprocess.Popen:
    """``python -m <module> <args>`` started in a new interpreter in ``cwd`` and not waited for (a test kills it,
    runs several at once or measures it): one torch thread, ``HYDRA_FULL_ERROR=1`` unless ``full_error`` is false,
    ``env`` added to the environment. ``popen``: :class:`subprocess.Popen`'s own arguments (output discarded unless
    they say where)."""
    base = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    popen = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, **popen}
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=cwd,
                            env={**base, **_command_env(env, full_error)}, **popen)


def _command_env(env: dict[str, str] | None, full_error: bool) -> dict[str, str]:
    """What a test's command adds to the environment: one torch thread, ``HYDRA_FULL_ERROR=1`` unless
    ``full_error`` is false, then ``env``."""
    return {"OMP_NUM_THREADS": "1", **({"HYDRA_FULL_ERROR": "1"} if full_error else {}), **(env or {})}


@contextlib.contextmanager
def _process_kept(module: str, args: tuple[str, ...], cwd: Path, env: dict[str, str]) -> Iterator[None]:
    """This process set up as ``python -m <module> <args>`` started in ``cwd`` with ``env`` would be (``$TMPDIR``,
    ``$PYTHONPATH``, torch threads, warnings shown) and put back afterwards: environment, paths, argv, logging,
    warning filters, torch's threads, RNGs and flags, the record of failed sweep jobs, and what the plugins of
    ``$UVAV_PLUGINS`` registered (the registries, Hydra's config store, their modules)."""
    import random

    import numpy as np
    import torch
    from hydra.core.config_store import ConfigStore

    from uvav import errors
    from uvav.data import DATASETS
    from uvav.methods import METHODS

    saved_env, saved_cwd, saved_argv, saved_path = dict(os.environ), os.getcwd(), sys.argv[:], sys.path[:]
    saved_tmp, saved_modules = tempfile.tempdir, set(sys.modules)
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    py_rng, np_rng = random.getstate(), np.random.get_state()
    registries = [(r, dict(r._entries), r._discovered) for r in (METHODS, DATASETS)]
    store = ConfigStore.instance().repo
    schemas = {group: set(store.get(group, {})) for group in ("data", "method")}  # uvav.checks.register_configs
    try:
        os.environ.pop("HYDRA_FULL_ERROR", None)
        os.environ.update(env)
        sys.path[:0] = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        tempfile.tempdir = None  # found again from $TMPDIR, as a new process would
        torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
        os.chdir(cwd)
        sys.argv = [module, *args]
        errors._TASK_STARTED, errors.JobFailed.failed = False, []
        for registry, _, _ in registries:
            registry._discovered = False  # a new process discovers the modules and plugins anew
        with torch.random.fork_rng(devices=[]), logging_kept(), warnings.catch_warnings():
            _warn_as_a_new_interpreter()
            yield
    finally:
        plugins = [n.strip() for n in env.get("UVAV_PLUGINS", "").split(",") if n.strip()]
        for name in set(sys.modules) - saved_modules:
            if any(name == p or name.startswith(f"{p}.") for p in plugins):
                del sys.modules[name]
        for registry, entries, discovered in registries:
            registry._entries, registry._discovered = entries, discovered
        for group, names in schemas.items():
            for name in set(store.get(group, {})) - names:
                del store[group][name]
        os.environ.clear()
        os.environ.update(saved_env)
        os.chdir(saved_cwd)
        sys.argv, sys.path[:], tempfile.tempdir = saved_argv, saved_path, saved_tmp
        errors._TASK_STARTED, errors.JobFailed.failed = False, []
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
        torch.set_flush_denormal(False)
        random.setstate(py_rng)
        np.random.set_state(np_rng)


def _warn_as_a_new_interpreter() -> None:
    """Python's default warning filters, printed to ``sys.stderr`` (pytest records them instead)."""
    warnings.resetwarnings()
    for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
        warnings.simplefilter("ignore", category)
    warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")
    warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: sys.stderr.write(
        warnings.formatwarning(message, category, filename, lineno, line))


def run_cli(tmp_path: Path, *args: str, check: bool = True, timeout: int = 300,
            **kwargs: object) -> subprocess.CompletedProcess:
    """``python -m uvav.run`` (as :func:`run_module` runs it), with outputs and caches under ``tmp_path``
    (``run/``, ``sweep/``, ``cache/``; a ``paths.cache_dir=`` in ``args`` wins). ``kwargs`` go to
    :func:`run_module`."""
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
        import torch

        torch.set_num_threads(1)


def _starts_a_run(func: Callable) -> bool:
    """Whether ``func``'s source runs a command (:func:`run_cli`, :func:`run_module`, a module's own helper) or
    starts a process."""
    try:
        return bool(STARTS_A_RUN.search(inspect.getsource(func)))
    except (OSError, TypeError):
        return False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """``slow``: tests using a :data:`SLOW_FIXTURES` fixture, and tests that run a command or start a process
    themselves or through one of their fixtures. Slow tests go first, so that the workers end together."""
    for item in items:
        fixtures = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
        funcs = [getattr(item, "function", None), *(defs[-1].func for defs in fixtures.values())]
        if any(name in SLOW_FIXTURES for name in fixtures) or any(
                _starts_a_run(f) for f in funcs if f is not None and _in_tests(f)):
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: files stay in order


def _in_tests(func: Callable) -> bool:
    return Path(inspect.getfile(func)).resolve().is_relative_to(REPO / "tests") and func.__name__ not in (
        "run_module", "run_cli")


def tiny_model(fusion_depth: int = 1) -> AVClassifier:
    """A small AVClassifier on 32x32 fbanks and 16 px images, built without a config."""
    from uvav.models.classifier import AVClassifier

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
