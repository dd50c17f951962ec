"""The run record (``uvav/record.py``): its fields are the README's, one writer that refuses unknown keys, one
reader that keeps them, and the jobs reader's reasons."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from uvav import record
from uvav.jobs import read_finished
from uvav.record import FIELDS, RecordError, RunRecord, read_record, write_record

README = Path(__file__).resolve().parents[1] / "README.md"
GOOD = {"schema_version": record.SCHEMA_VERSION, "status": "completed", "method": "ft", "seed": 0,
        "main_mode": "ft", "accuracy": {"ft": {"complete": 0.5}}, "objective": {"name": "val_acc", "value": 0.5},
        "wall_time_s": 3, "overrides": ["seed=0"]}


def _readme_fields() -> set[str]:
    """The keys the README's ``metrics.json`` section lists: the backticked names before each bullet's colon."""
    section = README.read_text().split("### `metrics.json`\n", 1)[1].split("\n### ", 1)[0]
    bullets = [line[2:] for line in section.splitlines() if line.startswith("- ")]
    return {name for bullet in bullets for name in re.findall(r"`([a-z_0-9]+)`", bullet.split(": ", 1)[0])}


def test_the_readme_lists_exactly_the_schema_fields():
    assert _readme_fields() == set(FIELDS)


def test_every_field_says_what_it_holds_and_the_version_is_the_record_s():
    assert all(doc for doc in FIELDS.values())
    assert record.SCHEMA_VERSION == GOOD["schema_version"]


def test_write_then_read_gives_the_same_content(tmp_path):
    write_record(tmp_path / "metrics.json", GOOD)
    assert json.loads((tmp_path / "metrics.json").read_text()) == GOOD
    read = read_record(tmp_path / "metrics.json")
    assert read.seed == 0 and read.accuracy == GOOD["accuracy"] and read.to_dict() == GOOD


def test_the_writer_refuses_a_key_the_schema_lacks(tmp_path):
    with pytest.raises(RecordError, match=r"\['new_key'\].*uvav.record.RunRecord"):
        write_record(tmp_path / "metrics.json", {**GOOD, "new_key": 1})
    assert not (tmp_path / "metrics.json").exists()


def test_the_reader_keeps_keys_of_other_versions_and_checks_types(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({**GOOD, "later_key": [1]}))
    read = read_record(tmp_path / "metrics.json")
    assert read.extra == {"later_key": [1]} and read.to_dict()["later_key"] == [1]
    with pytest.raises(RecordError, match="seed is str, expected int"):
        RunRecord.from_dict({**GOOD, "seed": "0"})
    with pytest.raises(RecordError, match="not a JSON object"):
        RunRecord.from_dict([GOOD])


@pytest.mark.parametrize(("content", "reason"), [
    ('{"status": "compl', "not valid JSON"),
    (json.dumps({**GOOD, "accuracy": [0.5]}), "accuracy is list, expected dict"),
    (json.dumps({**GOOD, "schema_version": 0}), "schema_version 0"),
])
def test_read_finished_names_why_a_record_is_not_usable(tmp_path, content, reason):
    (tmp_path / "metrics.json").write_text(content)
    metrics, why = read_finished(tmp_path)
    assert metrics is None and reason in why


def test_read_finished_returns_a_usable_record(tmp_path):
    write_record(tmp_path / "metrics.json", GOOD)
    assert read_finished(tmp_path, ["seed=0"]) == (GOOD, None)
