"""Corruption suites as the field measures robustness: ImageNet-C's 15 frame corruptions and audio corruptions, each
at five severities, applied where READ and ImageNet-C apply them (the waveform and the image, before features and
normalisation).

One module per family registers its corruptions (:data:`CORRUPTIONS`, discovered like methods and datasets):
``visual_noise``, ``visual_blur``, ``visual_weather``, ``visual_digital`` and ``audio_noise``, ``audio_signal``,
``audio_environment``. A corruption maps one input and a severity (1-5) to an input of the same shape and dtype, with
every random draw taken from the ``numpy.random.RandomState`` it is given (:func:`sample_rng`: fixed by seed,
corruption, severity and sample), so a corrupted evaluation set is the same on every run. Frames are ``uint8 [H, W,
3]`` RGB; waveforms are ``float32 [T]`` (mono) with their sample rate.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from uvav.registry import Registry

SEVERITIES = (1, 2, 3, 4, 5)
MODALITIES = ("visual", "audio")


@dataclass(frozen=True)
class Corruption:
    """A registered corruption: ``fn(x, severity, rng, **context)`` (``context``: ``sample_rate`` for audio)."""

    name: str
    modality: str  # "visual" or "audio"
    family: str  # e.g. "noise", "blur", "weather", "digital"
    fn: Callable[..., np.ndarray] = field(repr=False)
    order: int = 0
    needs: str | None = None  # what it needs that uvav cannot ship or download (e.g. recordings), else None
    reference: str = ""  # the published definition it follows, and how it is checked

    @property
    def schema(self) -> Callable[..., np.ndarray]:
        """Where it is defined (:class:`uvav.registry.Registry` refuses two definitions of one name)."""
        return self.fn

    def __call__(self, x: np.ndarray, severity: int, rng: np.random.RandomState, **context: Any) -> np.ndarray:
        if severity not in SEVERITIES:
            raise ValueError(f"corruption {self.name}: severity {severity!r} is not one of {SEVERITIES}")
        out = self.fn(x, severity, rng, **context)
        if out.shape != x.shape or out.dtype != x.dtype:
            raise RuntimeError(f"corruption {self.name} returned {out.dtype} {tuple(out.shape)} for "
                               f"{x.dtype} {tuple(x.shape)}")
        return out


CORRUPTIONS: Registry[Corruption] = Registry("corruption", __name__)


def register(name: str, modality: str, family: str, order: int = 0, needs: str | None = None, reference: str = ""
             ) -> Callable[[Callable[..., np.ndarray]], Callable[..., np.ndarray]]:
    """Decorator: register ``fn`` as corruption ``name``; the function is returned unchanged."""
    if modality not in MODALITIES:
        raise ValueError(f"corruption {name}: modality {modality!r} is not one of {MODALITIES}")

    def add(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
        CORRUPTIONS.register(Corruption(name, modality, family, fn, order, needs,
                                        reference or (inspect.getdoc(fn) or "").split("\n")[0]))
        return fn

    return add


def names(modality: str | None = None) -> list[str]:
    """Registered corruptions (of one modality), in registry order."""
    return [c.name for c in CORRUPTIONS if modality in (None, c.modality)]


def sample_rng(seed: int, name: str, severity: int, index: int) -> np.random.RandomState:
    """The generator of sample ``index`` under corruption ``name`` at ``severity``: a function of those and ``seed``
    only (the legacy RandomState: the stream ImageNet-C's and imagecorruptions' code draw from)."""
    digest = hashlib.blake2b(f"{seed}/{name}/{severity}/{index}".encode(), digest_size=4).digest()
    return np.random.RandomState(int.from_bytes(digest, "little"))
