"""``method=standin``: learnable stand-in tokens for a missing modality on the frozen FT model (a baseline beside
prompts, in the manner of missing-modality-prompt work).

Trainable: one token sequence per modality, shaped like that modality's encoder output (``[N_audio, D]``,
``[N_visual, D]``), plus the head with ``method.train_head``; every weight of the FT model stays frozen.

Which rows get them (the case is unknown, in training as at test): a modality is missing in a sample when its
encoder output is the *missing signature*, the encoder output of an all-zero input (computed once per model, under
the job's autocast; the ``missing`` audio and ``black`` image corruptions give exactly zeros after normalisation), to
within ``method.missing_tolerance`` of the signature's scale (reduced precision: fp16 caches, bf16 autocast). Those
rows get that modality's tokens replaced by its stand-ins before the fusion; a noisy but present modality (gaussian,
roll, masked bins, blur, pixelate) keeps its own tokens, and so does every complete sample: nothing else tells the
model a modality is missing, so with the default noise kinds only black images are replaced (no audio kind is
``missing``; ``noise.audio=[missing] noise.visual=[black]`` makes every corrupted modality a missing one). An input
that is entirely zero counts as missing whatever made it so.

The stand-ins start equal to the signature, so before training the model computes what the FT model computes. They
act after the frozen encoders, so the stage sees the base's encoder outputs unchanged: it trains on the cached views
and is scored on the job's shared evaluation encodings, as attention-level prompts are. Result: ``standin`` (mode
``none``). The layer: :mod:`uvav.models.standin`; state-dict keys ``standins.audio``, ``standins.visual`` (the
parameters), ``standins.missing_audio``, ``standins.missing_visual`` (the signature).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from uvav.config import require
from uvav.methods import METHODS, FrozenBaseConfig, PeftMethod, cache_views, schedule

if TYPE_CHECKING:
    from torch import nn

    from uvav.models.classifier import AVClassifier
    from uvav.train import Stage


@dataclass
class StandinConfig(FrozenBaseConfig):
    name: str = "standin"
    # a modality is missing when its tokens' mean absolute difference from the missing signature is at most this
    # share of the signature's mean absolute value
    missing_tolerance: float = 0.01


class StandIn(PeftMethod):
    name = "standin"
    schema = StandinConfig
    order = 40
    title = "Stand-in"
    comparison_order = 40
    summary = "frozen FT model with learned stand-in tokens for a missing modality, no prompts"
    variant_order = 4
    # no table_note (as LoRA and adapters): every accuracy table's note lists each method's, and a new one would
    # change the notes of committed tables without a stand-in column (its summary says what it is)

    def check(self, cfg) -> None:
        super().check(cfg)
        tolerance = cfg.method.missing_tolerance
        require(0 <= tolerance < 1, "method.missing_tolerance", tolerance, ">= 0 and < 1")

    def shares_encodings(self, cfg) -> bool:
        """The stand-ins replace encoder outputs after the frozen encoders and need nothing else of a sample."""
        return True

    def settings(self, method: Any, prompt: Any) -> str:
        return f"tol={method.get('missing_tolerance')}"

    def prepare(self, model: AVClassifier, method: Any) -> AVClassifier:
        from uvav.models.standin import add_standins

        add_standins(model, float(method.missing_tolerance))
        return model

    def new_parameters(self, model: AVClassifier) -> list[nn.Parameter]:
        return list(model.standins.parameters()) if model.standins is not None else []

    def build_stage(self, cfg, base, device) -> Stage:
        from uvav.models.standin import add_standins
        from uvav.runtime import autocast_for
        from uvav.train import Stage

        # the signature carries the rounding of the autocast the job encodes its data under
        add_standins(base, float(cfg.method.missing_tolerance), autocast_for(device, cfg.trainer.precision))
        epochs, lr = schedule(cfg)
        return Stage.frozen(self.name, base.to(device), list(cfg.scenario.train_cases), epochs=epochs, lr=lr,
                            weight_decay=cfg.trainer.weight_decay, cache_views=cache_views(cfg),
                            shares_encodings=self.shares_encodings(cfg))


METHODS.register(StandIn())
