"""uvav's error types and how the command-line entrypoints report them.

Every mistake a user can fix (a setting, a data file, a checkpoint, disk space, a lock) raises a subclass of
:class:`UserError` whose message names the file or setting and the fix. The ``python -m uvav.*`` entrypoints
print it as one line ``uvav: <message>`` on stderr and exit with code 2 (:func:`report_user_errors`); any
other exception is a crash and keeps its traceback (exit 1). ``HYDRA_FULL_ERROR=1`` (Hydra's convention)
prints the full traceback of user errors too (still exit 2). The concrete types live beside the code that
raises them and stay importable there (``uvav.config.ConfigError``, ``uvav.data.features.BadFileError``, ...).
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from hydra.errors import CompactHydraException

USER_ERROR_EXIT = 2  # a crash exits 1 (Python's and Hydra's default)
log = logging.getLogger("uvav")
_T = TypeVar("_T")


class UserError(Exception):
    """A mistake the user can fix; its message names the file or setting and what to do."""


class ConfigError(UserError, ValueError):
    """A setting that composes but cannot run (a value out of range, an impossible combination): names the key."""


class RunError(UserError, RuntimeError):
    """A run folder from which the model cannot be rebuilt (missing files, other schema, unusable config)."""


class InputError(UserError, ValueError):
    """An input that cannot be used: a missing or unreadable file, or a request the run cannot serve."""


class DataPathError(UserError, FileNotFoundError):
    """A data setting (``data.root``, ``data.*_json``, ``data.label_csv``, ``data.manifest``) naming a missing path."""


class DataFileError(UserError, ValueError):
    """A data file (datafile JSON, label or metadata CSV, dataset file) whose content cannot be used."""


class PrepareError(UserError, RuntimeError):
    """A dataset's files could not be fetched (``python -m uvav.prepare``); the message says how to fetch them by
    hand."""


class LockError(UserError, OSError):
    """A lock file that cannot be created (e.g. a read-only ``paths.cache_dir``)."""


class JobFailed(CompactHydraException):
    """A job of a ``-m`` sweep failed; its own error was reported when it happened. Its message lists every failed
    job of this sweep so far (Hydra prints it alone, no traceback, when the sweep ends)."""

    failed: list[str] = []  # "<job num> (<overrides>): <reason>", this process's sweep

    def __str__(self) -> str:
        jobs = JobFailed.failed or [str(self.args[0]) if self.args else "?"]
        return f"uvav: {len(jobs)} job(s) of the sweep failed:\n" + "\n".join(f"  {job}" for job in jobs)


def full_error() -> bool:
    """``HYDRA_FULL_ERROR=1``: show whole tracebacks, also of user errors."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def one_line(error: BaseException) -> str:
    """The message of ``error`` on one line (later lines joined with ``; ``)."""
    text = str(error) or type(error).__name__
    if isinstance(error, OSError) and error.strerror and error.filename and str(error.filename) not in text:
        text = f"{error.filename}: {text}"
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def safe_file_name(value: str | None, setting: str) -> str | None:
    """``value`` if it is a plain file name (no separator, not ``.``/``..``, not absolute), else
    :class:`InputError` naming ``setting``. None passes."""
    if value is None:
        return None
    text = str(value)
    if (not text or text in (".", "..") or "/" in text or "\\" in text or "\0" in text
            or Path(text).is_absolute() or Path(text).name != text):
        raise InputError(f"{setting}={text!r}: must be a plain file name (no '/', '..' or absolute path); it is "
                         "written inside the run folder")
    return text


def _log_to_files(message: str) -> None:
    """Add ``message`` to the log files Hydra opened (run.log), not to the console (stderr has it)."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def run_entrypoint(main: Callable[[], Any]) -> None:
    """Call a ``@hydra.main`` function (a module's ``__main__``). In a single run, what fails before the job
    started is Hydra refusing the command line or the config (unknown key, wrong type, unknown option: its own
    one message): exit 2 like uvav's own user errors, where Hydra exits 1. (A sweep's jobs may run in other
    processes, so a sweep keeps Hydra's exit codes.)"""
    sweep = any(arg in ("-m", "--multirun") or arg.lower() == "hydra.mode=multirun" for arg in sys.argv[1:])
    try:
        main()
    except SystemExit as done:
        if done.code == 1 and not _TASK_STARTED and not sweep:
            sys.exit(USER_ERROR_EXIT)
        raise
    except Exception as error:  # HYDRA_FULL_ERROR=1: Hydra re-raises instead of exiting
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        if _TASK_STARTED or sweep or not isinstance(error, (HydraException, OmegaConfBaseException)):
            raise
        traceback.print_exc()
        sys.exit(USER_ERROR_EXIT)


_TASK_STARTED = False  # set when the first job starts: an earlier failure is Hydra's refusal of the command line


def report_user_errors(task: Callable[[Any], _T]) -> Callable[[Any], _T]:
    """Wrap a Hydra task function (under ``@hydra.main``): a :class:`UserError` prints ``uvav: <message>`` on
    stderr and exits with :data:`USER_ERROR_EXIT`. In a ``-m`` sweep every failure (user error: one line; crash:
    its traceback, logged) is recorded and re-raised as :class:`JobFailed`, so the launcher runs the other jobs
    and the sweep ends with the list of failed jobs and exit code 1. ``HYDRA_FULL_ERROR=1`` adds the traceback
    of user errors (same exit codes)."""

    @functools.wraps(task)
    def wrapped(cfg: Any) -> _T:
        global _TASK_STARTED
        _TASK_STARTED = True
        try:
            return task(cfg)
        except Exception as error:
            user = isinstance(error, UserError)
            message = one_line(error)
            if not _in_multirun():
                if not user:
                    raise
                if full_error():
                    traceback.print_exc()
                _log_to_files(message)
                print(f"uvav: {message}", file=sys.stderr, flush=True)
                sys.exit(USER_ERROR_EXIT)
            job = _job_label()
            if user:
                if full_error():
                    traceback.print_exc()
                _log_to_files(message)
                print(f"uvav: job {job}: {message}", file=sys.stderr, flush=True)
            else:
                log.exception("job %s crashed", job)
            JobFailed.failed.append(f"{job}: {message if user else f'{type(error).__name__}: {message}'}")
            raise JobFailed(message) from error

    return wrapped


def exit_code_of(main: Callable[[], int | None]) -> int:
    """For argparse entrypoints (``sys.exit(exit_code_of(main))``): ``main()``'s code, or 2 and one line
    ``uvav: <message>`` for a :class:`UserError`."""
    try:
        return main() or 0
    except UserError as error:
        if full_error():
            traceback.print_exc()
        print(f"uvav: {one_line(error)}", file=sys.stderr, flush=True)
        return USER_ERROR_EXIT


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _job_label() -> str:
    from hydra.core.hydra_config import HydraConfig

    job = HydraConfig.get().job
    return f"{job.num} ({' '.join(HydraConfig.get().overrides.task)})" if "num" in job else "?"
