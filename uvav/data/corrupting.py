"""Evaluation under a registered corruption (:mod:`uvav.corruptions`), applied where READ and ImageNet-C apply it:
to each validation and test clip's 16 kHz waveform and to its frames at the evaluated size (uint8, after CAV-MAE's
resize and crop), before features and normalisation. Training clips stay clean, so the normalisation statistics
(of the training split) and the training data are those of the clean store.

The corrupted clips go to a feature store of their own (validation and test items only), named by the corruption,
its severity and the data seed, built once like any store: its cost is one decode of the validation and test
clips per corruption and severity (``store.decode_s`` in the data record). Each clip's draws come from
:func:`uvav.corruptions.sample_rng` keyed by the data seed, the corruption, the severity and the file's *name*, so
a corrupted set is the same on every machine and run. Generated datasets (no source files) have no waveform or
image to corrupt: their robustness axis is the feature-level ``noise.*`` recipes.
"""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from uvav.corruptions import CORRUPTIONS, SEVERITIES, sample_rng
from uvav.errors import ConfigError, DataFileError

KEYS = {"visual": "visual_corruption", "audio": "audio_corruption"}  # modality -> its key in the data config


@dataclass(frozen=True)
class SourceCorruption:
    """The corruption of each modality (a registered name, or None) at ``severity``, drawn from ``seed``."""

    visual: str | None
    audio: str | None
    severity: int
    seed: int

    @classmethod
    def of(cls, cfg: Any) -> SourceCorruption | None:
        """The corruption a data config asks for (None without one); a name, modality or severity that does not
        fit fails here, before any decoding, in one line."""
        asked = {modality: cfg.get(key) for modality, key in KEYS.items()}
        if all(name is None for name in asked.values()):
            return None
        for modality, name in asked.items():
            known = [c.name for c in CORRUPTIONS if c.modality == modality]
            if name is not None and name not in known:
                raise ConfigError(f"data.{KEYS[modality]}={name!r}: one of {known}")
        severity = cfg.get("corruption_severity")
        if severity not in SEVERITIES:
            raise ConfigError(f"data.corruption_severity={severity!r}: one of {list(SEVERITIES)}")
        return cls(asked["visual"], asked["audio"], int(severity), int(cfg.seed))

    def settings(self) -> dict[str, Any]:
        """What the corrupted store depends on (its name), and what the data record says."""
        return {**dataclasses.asdict(self), "splits": ["val", "test"],
                "applied_to": "16 kHz waveform; frames at the evaluated size (uint8), before features"}

    def _rng(self, name: str, key: str) -> np.random.RandomState:
        return sample_rng(self.seed, name, self.severity, zlib.crc32(key.encode()))

    def waveform(self, wave: torch.Tensor, key: str, sample_rate: int) -> torch.Tensor:
        """A mono waveform ``[samples]`` of the file named ``key``, corrupted when audio is."""
        if self.audio is None or wave.numel() == 0:
            return wave
        samples = wave.numpy().astype(np.float32, copy=False)
        out = CORRUPTIONS.get(self.audio)(samples, self.severity, self._rng(self.audio, key), sample_rate=sample_rate)
        return torch.from_numpy(np.ascontiguousarray(out)).to(wave.dtype)

    def image(self, image: torch.Tensor, key: str) -> torch.Tensor:
        """A frame ``uint8 [3, S, S]`` of the file named ``key``, corrupted when the visual modality is."""
        if self.visual is None:
            return image
        pixels = np.ascontiguousarray(image.permute(1, 2, 0).numpy())
        out = CORRUPTIONS.get(self.visual)(pixels, self.severity, self._rng(self.visual, key))
        return torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1).contiguous()


def check_no_corruption(cfg: Any, dataset: str) -> None:
    """Refuse a corruption for data read from no source files (generated), in one line."""
    asked = [f"data.{key}={cfg.get(key)}" for key in KEYS.values() if cfg.get(key) is not None]
    if asked:
        raise ConfigError(f"{', '.join(asked)}: {dataset} data is generated, with no waveform or image to corrupt; "
                          f"corruptions apply to decoded datasets (their feature-level noise: noise.*)")


def eval_store(corruption: SourceCorruption | None, cfg: Any, spec: Any, items: list[Any],
               sources: list[str | Path], settings: dict[str, Any], cache_dir: str | Path, rows: torch.Tensor,
               parts: dict[str, torch.Tensor]) -> tuple[Any, dict[str, torch.Tensor], dict[str, Any]] | None:
    """The store of the validation and test clips under ``corruption`` (:meth:`SourceCorruption.of` the data
    config, checked before the clean store is built; None: no store), their rows in it, and what the data record
    says of it. ``items[rows[parts[split]]]`` are the split's clips in the clean store; ``spec.decode`` takes a
    ``corruption`` keyword; ``cfg``: the data config (workers, verification)."""
    if corruption is None:
        return None
    from uvav.data.store_build import build_store

    chosen = [int(rows[i]) for split in ("val", "test") for i in parts[split].tolist()]
    corrupted = dataclasses.replace(spec, name=f"{spec.name}-corrupted", decode=partial(spec.decode,
                                                                                         corruption=corruption))
    store = build_store(corrupted, [items[r] for r in chosen], sources,
                        {**settings, "corruption": corruption.settings(), "rows": chosen}, cache_dir,
                        cfg.num_workers, cfg.verify_store)
    if not all(store.ok):
        bad = [str(items[chosen[i]]) for i, ok in enumerate(store.ok) if not ok][:3]
        raise DataFileError(f"{len(store.ok) - sum(store.ok)} clip(s) decoded clean but not corrupted: {bad}")
    n_val = len(parts["val"])
    at = {"val": torch.arange(n_val), "test": torch.arange(n_val, len(chosen))}
    return store, at, {**corruption.settings(), "store": store.report, "content_digest": store.content_digest}
