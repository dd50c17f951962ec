"""uvav: audio-visual classification under missing or noisy modalities (fine-tuning vs prompt learning).

``from uvav import load_run`` rebuilds a finished run for evaluation and prediction (:mod:`uvav.api`); it is
imported on first use, so ``import uvav`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from uvav.api import Prediction, Run, load_run

__all__ = ["Prediction", "Run", "load_run"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from uvav import api

        return getattr(api, name)
    raise AttributeError(f"module 'uvav' has no attribute {name!r}")
