"""A PEFT method defined outside uvav, in one module (plus ``conf/method/gated_mlp.yaml``): a learned per-channel
gate on the output of every transformer block's MLP, ``mlp(x) * (1 + g)`` with ``g`` starting at zero (an
(IA)^3-like scaling). Registered when imported: ``UVAV_PLUGINS=tests.plugins.gated_mlp``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from uvav.methods import METHODS, FrozenBaseConfig, PeftMethod
from uvav.models.classifier import AVClassifier, transformer_blocks


@dataclass
class GatedMlpConfig(FrozenBaseConfig):
    name: str = "gated_mlp"


class GatedMlp(nn.Module):
    """``mlp(x) * (1 + gate)``; the MLP moves to ``mlp.inner`` (keys ``mlp.inner.fc1.weight``, ``mlp.gate``)."""

    def __init__(self, mlp: nn.Module, dim: int) -> None:
        super().__init__()
        self.inner = mlp
        self.gate = nn.Parameter(torch.zeros(dim, device=mlp.fc1.weight.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * (1 + self.gate)


class GatedMlpMethod(PeftMethod):
    name = "gated_mlp"
    schema = GatedMlpConfig
    title = "Gated MLP"  # tables: "FT + Gated MLP", its resource row, "Improvement (Gated MLP - FT)", a column
    comparison_order = 25
    summary = "frozen FT model with a learned gate on every MLP output, no prompts"

    def prepare(self, model: AVClassifier, method: Any) -> AVClassifier:
        for _, block in transformer_blocks(model):
            block.mlp = GatedMlp(block.mlp, block.mlp.fc2.out_features)
        return model

    def new_parameters(self, model: AVClassifier) -> list[nn.Parameter]:
        return [m.gate for m in model.modules() if isinstance(m, GatedMlp)]


METHODS.register(GatedMlpMethod())
