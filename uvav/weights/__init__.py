"""Where a model's starting weights come from: published CAV-MAE checkpoints by name or URL (:mod:`.zoo`, cached
and verified downloads) and their import into an :class:`~uvav.models.classifier.AVClassifier` (:mod:`.cavmae`).
Above :mod:`uvav.models`: the models know nothing of files, downloads or user errors."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from uvav.models.classifier import AVClassifier

log = logging.getLogger(__name__)


def build_model(cfg: Any, num_classes: int, device: torch.device, initial_weights: bool = True
                ) -> tuple[AVClassifier, dict[str, Any]]:
    """A job's AVClassifier (``cfg.backbone``, ``cfg.data``) on ``device``, with ``backbone.checkpoint`` loaded when
    ``initial_weights``; and where its weights came from (source, sha256, keys loaded, missing and unexpected)."""
    from uvav.models.classifier import AVClassifier

    model = AVClassifier.from_config(cfg.backbone, cfg.data, num_classes)
    weights: dict[str, Any] = {"kind": "random", "spec": None}
    if initial_weights and cfg.backbone.checkpoint:
        from uvav.weights.cavmae import load_cavmae_checkpoint
        from uvav.weights.zoo import resolve

        source = resolve(cfg.backbone.checkpoint, cfg.backbone.checkpoint_sha256, progress=cfg.trainer.progress)
        report = load_cavmae_checkpoint(model, source.path, allow_partial=cfg.backbone.get("allow_partial", False))
        log.info("CAV-MAE checkpoint: %s", report.summary())
        weights = {**source.as_dict(), **report.record()}
    if cfg.trainer.compile:
        model.compile_blocks()
    return model.to(device), weights
