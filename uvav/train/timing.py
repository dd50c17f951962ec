"""Where a job's time went: decoding, encoding (per split), training and evaluation (per stage), in seconds.

``metrics.json``'s ``timing`` (:meth:`JobTiming.record`) and one log line (:meth:`JobTiming.describe`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class JobTiming:
    """Seconds per part of a job. ``encode``: the shared evaluation encodings per split (``test``, ``val``) and the
    training caches per stage (``<stage>_train``: its training views and validation set); ``train``: a stage's
    fit without its cache; ``evaluate``: a stage's test and validation scoring without the encoding."""

    decode: float = 0.0
    encode: dict[str, float] = field(default_factory=dict)
    train: dict[str, float] = field(default_factory=dict)
    evaluate: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def measure(self, part: dict[str, float], name: str) -> Iterator[None]:
        """Add the time of the block to ``part[name]``."""
        started = time.perf_counter()
        try:
            yield
        finally:
            part[name] = part.get(name, 0.0) + time.perf_counter() - started

    def move(self, part: dict[str, float], name: str, to: dict[str, float], to_name: str, seconds: float) -> None:
        """Count ``seconds`` of ``part[name]`` as ``to[to_name]`` instead."""
        part[name] = part.get(name, 0.0) - seconds
        to[to_name] = to.get(to_name, 0.0) + seconds

    def record(self) -> dict[str, Any]:
        """``{"decode_s", "encode_s": {...}, "train_s": {...}, "evaluate_s": {...}}``, rounded to ms (the whole job
        is ``metrics.json``'s ``wall_time_s``)."""
        def rounded(part: dict[str, float]) -> dict[str, float]:
            return {name: round(seconds, 3) for name, seconds in part.items()}

        return {"decode_s": round(self.decode, 3), "encode_s": rounded(self.encode), "train_s": rounded(self.train),
                "evaluate_s": rounded(self.evaluate)}

    def describe(self, total: float) -> str:
        """One line: ``decode 8.0 s | encode pl_train 3.1 s | train ft 45.0 s, pl 9.8 s | evaluate ... | total``
        (``total``: the job's wall time)."""
        def part(label: str, seconds: dict[str, float]) -> str:
            return f"{label} " + (", ".join(f"{name} {s:.1f} s" for name, s in seconds.items()) or "-")

        return " | ".join([f"decode {self.decode:.1f} s", part("encode", self.encode), part("train", self.train),
                           part("evaluate", self.evaluate), f"total {total:.1f} s"])
