"""``method=adapter``: bottleneck adapters in the frozen FT model (a baseline beside prompts).

``h + up(GELU(down(h)))`` with ``h = mlp(x)``, after the MLP of every transformer block and fusion cross-block
(Pfeiffer placement, inside the block's residual branch). ``up`` starts at zero, so before training the model
computes exactly what the FT model computes.

State-dict keys: the MLP's keep theirs (``mlp.fc1.weight``); new: ``<block>.mlp.adapter.down.{weight,bias}`` and
``<block>.mlp.adapter.up.{weight,bias}`` (e.g. ``fusion.0.audio_from_visual.mlp.adapter.up.weight``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from uvav.config import require
from uvav.methods import METHODS, FrozenBaseConfig, PeftMethod
from uvav.models.classifier import AVClassifier, transformer_blocks


@dataclass
class AdapterConfig(FrozenBaseConfig):
    name: str = "adapter"
    adapter_bottleneck: int = 16  # hidden width of the adapter after every block's MLP


class Adapter(nn.Module):
    """Bottleneck ``up(GELU(down(h)))``; ``up`` is zero-initialised, so it adds nothing before training."""

    def __init__(self, dim: int, bottleneck: int, device: torch.device | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if bottleneck <= 0:
            raise ValueError(f"adapter bottleneck must be positive, got {bottleneck}")
        self.down = nn.Linear(dim, bottleneck, device=device, dtype=dtype)
        self.act = nn.GELU()
        self.up = nn.Linear(bottleneck, dim, device=device, dtype=dtype)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(h)))


class AdaptedMlp(nn.Module):
    """``h + adapter(h)`` with ``h = mlp(x)``, replacing a block's ``mlp``.

    The MLP's layers are registered here under their own names, so their keys do not change (``mlp.fc1.weight``
    stays ``mlp.fc1.weight``); the MLP object itself is kept outside the module tree only to call its forward.
    """

    def __init__(self, mlp: nn.Module, bottleneck: int) -> None:
        super().__init__()
        if any(True for _ in mlp.parameters(recurse=False)) or any(True for _ in mlp.buffers(recurse=False)):
            raise ValueError(f"{type(mlp).__name__} holds tensors of its own; only child layers can be re-registered")
        for name, child in mlp.named_children():
            self.add_module(name, child)
        self.__dict__["_mlp"] = mlp  # not a submodule: its children are already ours
        weight = mlp.fc1.weight
        self.adapter = Adapter(mlp.fc1.in_features, bottleneck, device=weight.device, dtype=weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self._mlp(x)
        return h + self.adapter(h)


def add_adapters(model: AVClassifier, bottleneck: int) -> list[str]:
    """Replace every transformer block's ``mlp`` by :class:`AdaptedMlp`, in place. Returns the blocks' names."""
    names = []
    for name, block in transformer_blocks(model):
        if isinstance(block.mlp, AdaptedMlp):
            raise ValueError(f"{name}.mlp already has an adapter (prepare applied twice?)")
        block.mlp = AdaptedMlp(block.mlp, bottleneck)
        names.append(name)
    return names


class Adapters(PeftMethod):
    name = "adapter"
    schema = AdapterConfig
    order = 30
    title = "Adapter"
    labels = {"adapter": "FT + adapter"}  # lower case in the committed tables
    improvements = {"Improvement (adapter - FT)": ("adapter", "ft")}
    comparison_order = 20
    summary = "frozen FT model with bottleneck adapters, no prompts"
    variant_order = 3

    def check(self, cfg) -> None:
        super().check(cfg)
        require(cfg.method.adapter_bottleneck > 0, "method.adapter_bottleneck", cfg.method.adapter_bottleneck,
                "a positive integer")

    def settings(self, method: Any, prompt: Any) -> str:
        return f"bottleneck={method.get('adapter_bottleneck')}"

    def prepare(self, model: AVClassifier, method: Any) -> AVClassifier:
        add_adapters(model, int(method.adapter_bottleneck))
        return model

    def new_parameters(self, model: AVClassifier) -> list[nn.Parameter]:
        return [p for m in model.modules() if isinstance(m, Adapter) for p in m.parameters()]


METHODS.register(Adapters())
