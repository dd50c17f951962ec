"""The README's "## Python API" example runs as written against a tiny run (docs/python_api_example.md holds the
same section until it is in README.md)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from .conftest import REPO
from .data.conftest import write_image, write_tone

HEADING = "## Python API"


def example_source() -> str:
    """The ```python block of the "## Python API" section: README.md if it has that heading, else the doc."""
    readme = REPO / "README.md"
    text = readme.read_text() if readme.is_file() else ""
    if not re.search(rf"^{re.escape(HEADING)}\s*$", text, flags=re.M):
        text = (REPO / "docs" / "python_api_example.md").read_text()
    section = re.split(rf"^{re.escape(HEADING)}\s*$", text, maxsplit=1, flags=re.M)[1]
    section = re.split(r"^## ", section, maxsplit=1, flags=re.M)[0]
    block = re.search(r"^```python\n(.*?)^```", section, flags=re.M | re.S)
    assert block, f"no ```python block under {HEADING!r}"
    return block.group(1)


def test_python_api_example_runs(us8k_runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(us8k_runs["pl"], run_dir)  # the example saves an evaluation into the run
    work = tmp_path / "work"
    write_tone(work / "clip.wav", 22050, 0.8, channels=2, freq=500.0)
    write_image(work / "frame", 0, 2)  # frame.jpg
    monkeypatch.chdir(work)
    monkeypatch.setenv("UVAV_RUN", str(run_dir))
    metrics_before = (run_dir / "metrics.json").read_bytes()
    exec(compile(example_source(), "README.md:Python API", "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out
    assert "pl_uncertain" in out and "pl_oracle" in out
    assert (run_dir / "metrics.json").read_bytes() == metrics_before
    saved = sorted(p.name for p in (run_dir / "evaluations").iterdir())
    assert saved == ["val-all-uncertain.json"]
    assert json.loads((run_dir / "evaluations" / saved[0]).read_text())["split"] == "val"
