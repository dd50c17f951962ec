"""The run record: ``metrics.json``, typed and versioned; one writer (:func:`write_record`), one reader
(:func:`read_record`).

A job writes its record once it has finished, atomically, into its folder (and into the cache of finished jobs,
``<cache>/jobs/<key>/``). Every key is a field of :class:`RunRecord`; :data:`FIELDS` says what each holds (the
README's "metrics.json" section lists the same fields, tests/test_record.py checks that). The writer refuses a key
that is not a field; the reader keeps unknown keys (:attr:`RunRecord.extra`) and lets absent fields be ``None``
(records of earlier versions lack some: ``metric`` means accuracy then). Which records are usable finished jobs is
:func:`uvav.jobs.metrics_problem`'s rule; it reads :data:`SCHEMA_VERSION` from here.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uvav.outputs import atomic_write_json

SCHEMA_VERSION = 1  # of metrics.json; also part of every job key (uvav.run.job_key): changing it renames all jobs
FILE = "metrics.json"


class RecordError(ValueError):
    """A ``metrics.json`` that cannot be read or written as a run record."""


def _field(kind: type | tuple[type, ...], doc: str) -> Any:
    """A record field: its JSON type(s) and what it holds; absent (``None``) unless the job wrote it."""
    return field(default=None, metadata={"kind": kind, "doc": doc})


NUMBER = (int, float)


@dataclass
class RunRecord:
    """One finished job's ``metrics.json``. ``None``: the job did not write that key (see each field's doc)."""

    schema_version: int | None = _field(int, "version of this schema (SCHEMA_VERSION); also in the job key")
    status: str | None = _field(str, '"completed" (only finished jobs write a record)')
    method: str | None = _field(str, "the method's name (method.name)")
    seed: int | None = _field(int, "the job's seed")
    job_key: str | None = _field(str, "what identifies the job's result: its folder in <cache>/jobs/")
    job_dir: str | None = _field(str, "the absolute path of the job folder that wrote it")
    reused_from: str | None = _field(str, "only when the job reused a finished one: that job's folder")
    choices: dict | None = _field(dict, "Hydra's config-group choices (data, backbone, prompt, scenario, method, "
                                        "trainer)")
    overrides: list | None = _field(list, "the command-line overrides of the job")
    config: dict | None = _field(dict, "the resolved job config")
    train_cases: list | None = _field(list, "the cases the job trained on (scenario.train_cases)")
    main_mode: str | None = _field(str, "the result key of the method's headline number (ft, pl_uncertain, lora, "
                                        "...)")
    metric: str | None = _field(str, 'what accuracy and val hold: "accuracy" or "mAP" (multi-label data; absent '
                                     "in records of earlier versions: accuracy)")
    accuracy: dict | None = _field(dict, "accuracy[mode][case]: test score per result key (ft, head_only, the "
                                         "method's keys) and case (complete, noisy_audio, noisy_visual, noise_both, "
                                         "mixed); absent for pretraining jobs")
    val: dict | None = _field(dict, "validation score, same layout as accuracy")
    per_class_ap: dict | None = _field(dict, "multi-label data only: per_class_ap[mode][case], test AP of each "
                                             "class in class_names order")
    class_names: list | None = _field(list, "the classes, in the classifier's output order")
    stages: dict | None = _field(dict, "per stage (ft, head_only, the method's): best_epoch, best_val, history, "
                                       "params (trainable, total), resources (time_per_epoch_s, epoch_times_s, "
                                       "peak_train_memory_bytes, memory_method, time_method, device, "
                                       "cached_features); ft also key, reused, weight_average")
    pretraining: dict | None = _field(dict, "pretraining jobs only: losses per epoch (history, final), resources, "
                                            "params, checkpoint; such a job has no accuracy")
    objective: dict | None = _field(dict, "name and value: the number returned to sweepers (non-finite: failed)")
    split: dict | None = _field(dict, "sizes of train/val/test and how the split was made")
    data_info: dict | None = _field(dict, "source, normalisation, skipped files, feature settings, content_digest "
                                          "and, for decoded datasets, the feature store")
    initial_weights: dict | None = _field(dict, "where the starting weights came from (kind, spec, url, path, "
                                                "sha256, loaded/missing/unexpected/mismatched keys)")
    device: str | None = _field(str, "the torch device the job ran on")
    environment: dict | None = _field(dict, "device name, library versions, host, CPU threads")
    distributed: dict | None = _field(dict, "world_size; under a distributed launch also backend and "
                                           "local_world_size")
    wall_time_s: float | None = _field(NUMBER, "wall-clock seconds of the job")
    timing: dict | None = _field(dict, "where the job's time went, in seconds: decode_s (opening or building the "
                                       "feature store), encode_s per split (test, val: the shared evaluation "
                                       "encodings) and per stage's training cache (<stage>_train), train_s and "
                                       "evaluate_s per stage (without that encoding); the whole job: wall_time_s")
    model_sha256: str | None = _field(str, "sha256 of the job's model.pt as stored in the cache (job reuse and "
                                           "load_run check it)")
    data_digest: str | None = _field(str, "content digest of the data it was trained on (data_info.content_digest)")
    extra: dict[str, Any] = field(default_factory=dict, metadata={"doc": None})  # keys of other versions, kept

    @classmethod
    def from_dict(cls, content: Any, strict: bool = False) -> RunRecord:
        """The record of a ``metrics.json`` content. A field of the wrong JSON type is an error; a key that is no
        field is kept in :attr:`extra`, or with ``strict`` (the writer) an error."""
        if not isinstance(content, dict):
            raise RecordError(f"{FILE} is not a JSON object")
        unknown = sorted(set(content) - set(FIELDS))
        if strict and unknown:
            raise RecordError(f"{FILE} keys {unknown} are not fields of uvav.record.RunRecord: add them there (and "
                              "to the README's metrics.json section)")
        for name, value in content.items():
            kind = _KINDS.get(name)
            if kind is not None and value is not None and (not isinstance(value, kind) or isinstance(value, bool)
                                                           and kind is not bool):
                raise RecordError(f"{FILE}: {name} is {type(value).__name__}, expected {_kind_name(kind)}")
        known = {k: v for k, v in content.items() if k in FIELDS}
        return cls(**known, extra={k: content[k] for k in unknown})

    def to_dict(self) -> dict[str, Any]:
        """The JSON content: every field the job wrote (not ``None``), then :attr:`extra`."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**{k: v for k, v in out.items() if v is not None}, **self.extra}


FIELDS: dict[str, str] = {f.name: f.metadata["doc"] for f in dataclasses.fields(RunRecord) if f.name != "extra"}
_KINDS: dict[str, Any] = {f.name: f.metadata["kind"] for f in dataclasses.fields(RunRecord) if f.name != "extra"}


def _kind_name(kind: type | tuple[type, ...]) -> str:
    return " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))


def write_record(path: str | Path, content: RunRecord | dict[str, Any]) -> RunRecord:
    """Write ``content`` (a record, or the dict a job built) to ``path`` atomically, after checking that every key
    is a field of the schema; returns the record written."""
    record = content if isinstance(content, RunRecord) else RunRecord.from_dict(content, strict=True)
    atomic_write_json(path, record.to_dict())
    return record


def read_record(path: str | Path) -> RunRecord:
    """The record in ``path`` (a ``metrics.json``); :class:`RecordError` saying why it cannot be read."""
    try:
        content = json.loads(Path(path).read_text())
    except OSError as error:
        raise RecordError(f"{FILE} unreadable: {error}") from error
    except ValueError as error:
        raise RecordError(f"{FILE} is not valid JSON (half-written or corrupt): {error}") from error
    return RunRecord.from_dict(content)
