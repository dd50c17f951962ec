"""User errors: one line ``uvav: <message>`` naming the file or setting, exit code 2; crashes keep their traceback;
``HYDRA_FULL_ERROR=1`` shows everything; a sweep runs its other jobs and lists the failed ones. Writes stay in
place (evaluate's ``name=``), and checkpoint imports must cover the model's encoders."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY, compose_config, run_cli, run_module
from uvav.checks import validate
from uvav.config import ConfigError
from uvav.errors import InputError, UserError, safe_file_name
from uvav.models.classifier import AVClassifier
from uvav.weights.cavmae import CheckpointError, load_cavmae_checkpoint


def uvav_cli(tmp_path: Path, module: str, *args: str, full_error: bool = False,
             fresh: bool = False) -> subprocess.CompletedProcess:
    """``python -m <module>`` as a user runs it (no ``HYDRA_FULL_ERROR`` unless asked; ``fresh``: in a new
    interpreter), everything under ``tmp_path``."""
    (tmp_path / "tmp").mkdir(exist_ok=True)
    if module == "uvav.run":
        return run_cli(tmp_path, *args, check=False, full_error=full_error, env={"TMPDIR": str(tmp_path / "tmp")},
                       fresh=fresh)
    return run_module(module, *args, cwd=tmp_path, check=False, full_error=full_error,
                      env={"TMPDIR": str(tmp_path / "tmp")}, fresh=fresh)


def refusal(tmp_path: Path, module: str, *args: str) -> subprocess.CompletedProcess:
    """``module``'s refusal of ``args``, called in this process (outputs under ``tmp_path`` as in
    :func:`uvav_cli`)."""
    if module == "uvav.run":
        args = (*args, f"hydra.run.dir={tmp_path / 'run'}",
                *([] if any(a.startswith("paths.cache_dir=") for a in args) else [f"paths.cache_dir={tmp_path / 'c'}"]))
    return run_module(module, *args, cwd=tmp_path, check=False, full_error=False)


def assert_one_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2, no traceback, exactly one ``uvav:`` line on stderr, holding every needle."""
    lines = [line for line in proc.stderr.splitlines() if line.startswith("uvav:")]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr + proc.stdout and "Error executing job" not in proc.stderr
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def small(embed_dim: int = 32, depth: int = 1) -> AVClassifier:
    return AVClassifier(3, 32, 32, 16, embed_dim=embed_dim, num_heads=2, depth=depth, patch_size=8,
                        image_patch_size=4)


# ---------------------------------------------------------------- in-process: rules and checks
def test_user_error_types_share_one_base():
    from uvav.data.features import BadFileError
    from uvav.data.store import StoreSpaceError
    from uvav.errors import DataFileError, DataPathError, LockError, RunError
    from uvav.weights.zoo import WeightsError

    for kind in (ConfigError, BadFileError, StoreSpaceError, WeightsError, CheckpointError, DataPathError,
                 DataFileError, LockError, RunError, InputError):
        assert issubclass(kind, UserError), kind
    assert issubclass(ConfigError, ValueError) and issubclass(DataPathError, FileNotFoundError)


@pytest.mark.parametrize("name", ["../x", "/abs/path", "a/b", "..", ".", "", "a\\b"])
def test_names_that_become_paths_must_be_plain(name):
    with pytest.raises(InputError, match="name="):
        safe_file_name(name, "name")
    assert safe_file_name("test-all-ok.v2", "name") == "test-all-ok.v2"


def test_path_settings_of_the_wrong_kind_are_named(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for setting in ("paths.cache_dir", "data.cache_dir"):
        with pytest.raises(ConfigError, match=setting.replace(".", r"\.")):
            validate(compose_config(f"{setting}={a_file}"))
        with pytest.raises(ConfigError, match=setting.replace(".", r"\.")):  # a folder under a file
            validate(compose_config(f"{setting}={a_file / 'sub'}"))
    with pytest.raises(ConfigError, match=r"backbone\.checkpoint"):
        validate(compose_config(f"backbone.checkpoint={tmp_path}"))
    validate(compose_config(f"paths.cache_dir={tmp_path / 'new' / 'cache'}"))  # not there yet: made later


def test_a_lock_that_cannot_be_made_names_its_file(tmp_path):
    from uvav.errors import LockError
    from uvav.outputs import file_lock

    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(LockError, match=str(a_file / "jobs" / "k.lock")), file_lock(a_file / "jobs" / "k.lock"):
        pass


def test_a_checkpoint_of_another_size_is_refused_naming_the_rule(tmp_path):
    """The issue's case: one tensor of another preset matches (the head's bias); the encoders are not covered."""
    path = tmp_path / "tiny.pt"
    torch.save({"model": small(embed_dim=16).state_dict()}, path)
    model = small(embed_dim=32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        load_cavmae_checkpoint(model, path)
    message = str(err.value)
    assert str(path) in message and "every audio.* and visual.* tensor" in message
    assert "backbone.allow_partial=true" in message and "head.1.bias" in message  # what matched
    assert "audio.blocks.{0..0}.*" in message  # what did not, compactly
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing loaded


def test_allow_partial_loads_with_a_warning(tmp_path, caplog):
    path = tmp_path / "shallow.pt"
    shallow = small(depth=1)
    torch.save(shallow.state_dict(), path)
    with pytest.raises(CheckpointError, match=r"audio\.blocks\.\{1\.\.1\}"):
        load_cavmae_checkpoint(small(depth=2), path)
    model = small(depth=2)
    with caplog.at_level(logging.WARNING, logger="uvav.weights.cavmae"):
        report = load_cavmae_checkpoint(model, path, allow_partial=True)
    assert any(r.levelno == logging.WARNING and "partial checkpoint import" in r.message for r in caplog.records)
    assert torch.equal(model.audio.blocks[0].mlp.fc1.weight, shallow.audio.blocks[0].mlp.fc1.weight)
    assert "audio.blocks.1.mlp.fc1.weight" in report.encoder_missing


def test_unreadable_checkpoints_never_advise_weights_only_false(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    garbage, evil = tmp_path / "garbage.pt", tmp_path / "evil.pt"
    garbage.write_bytes(os.urandom(4096))
    torch.save({"x": Payload()}, evil)
    for path in (garbage, evil):
        with pytest.raises(CheckpointError) as err:
            load_cavmae_checkpoint(small(), path)
        assert str(path) in str(err.value) and "not a readable checkpoint" in str(err.value)
        assert "weights_only=False" not in str(err.value) and "False" not in str(err.value)


# ---------------------------------------------------------------- the command line
def test_a_bad_data_root_is_one_line_naming_the_setting(tmp_path):
    proc = refusal(tmp_path, "uvav.run", "data=urbansound8k_av",
                        f"data.root={tmp_path / 'nowhere'}", "data.num_workers=0")
    assert_one_line(proc, "data.root=", "nowhere")
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_a_corrupt_wav_is_one_line_naming_the_file(tmp_path):
    from tests.data.conftest import make_us8k
    from uvav.data.urbansound8k_av import CLASS_NAMES, SOUND_DIR

    stems = make_us8k(tmp_path / "us8k", per_class=2)
    bad = tmp_path / "us8k" / SOUND_DIR / CLASS_NAMES[1] / f"{stems[2]}.wav"
    bad.write_bytes(b"RIFF\x00\x00garbage" * 10)
    proc = refusal(tmp_path, "uvav.run", "data=urbansound8k_av",
                        f"data.root={tmp_path / 'us8k'}", "data.num_workers=0", "data.target_length=32",
                        "data.image_size=32")
    assert_one_line(proc, str(bad), "data.on_bad_file=skip")


@pytest.mark.slow
def test_cache_dir_on_a_file_is_named_and_full_error_shows_the_traceback(tmp_path):
    a_file = tmp_path / "not_a_folder"
    a_file.write_text("x")
    proc = uvav_cli(tmp_path, "uvav.run", *TINY, f"paths.cache_dir={a_file}", fresh=True)  # the CLI's contract
    assert_one_line(proc, "paths.cache_dir", str(a_file))
    full = uvav_cli(tmp_path, "uvav.run", *TINY, f"paths.cache_dir={a_file}", full_error=True)
    assert full.returncode == 2 and "Traceback" in full.stderr and "ConfigError" in full.stderr


def test_hydras_own_refusal_exits_2_without_a_traceback(tmp_path):
    proc = refusal(tmp_path, "uvav.run", "trainer.no_such_key=1")  # Hydra's message
    assert proc.returncode == 2 and "no_such_key" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_random_bytes_checkpoint_is_one_line_without_the_unsafe_advice(tmp_path):
    garbage = tmp_path / "random.pt"
    garbage.write_bytes(os.urandom(2048))
    proc = refusal(tmp_path, "uvav.run", *TINY, "method=ft", f"backbone.checkpoint={garbage}")
    assert_one_line(proc, str(garbage), "not a readable checkpoint")
    assert "weights_only=False" not in proc.stderr + proc.stdout


@pytest.mark.slow
def test_a_sweep_runs_its_other_jobs_and_lists_the_failed_one(tmp_path):
    garbage = tmp_path / "random.pt"
    garbage.write_bytes(os.urandom(2048))
    proc = uvav_cli(tmp_path, "uvav.run", "-m", *TINY, "method=ft", f"backbone.checkpoint=null,{garbage}")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert (tmp_path / "sweep" / "0" / "metrics.json").is_file()  # the good job finished
    assert not (tmp_path / "sweep" / "1" / "metrics.json").exists()
    assert "job(s) of the sweep failed" in proc.stderr and f"backbone.checkpoint={garbage}" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("name", ["../x", "/abs/evaluation"])
def test_evaluate_refuses_names_outside_the_run_before_any_work(tmp_path, name):
    run = tmp_path / "run"
    run.mkdir()
    before = sorted(tmp_path.rglob("*"))
    proc = refusal(tmp_path, "uvav.evaluate", f"run={run}", f"name={name}")
    assert_one_line(proc, "name=", "plain file name")
    assert sorted(tmp_path.rglob("*")) == before
