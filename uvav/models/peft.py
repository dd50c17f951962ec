"""Parameter-efficient layers inserted into a trained :class:`~uvav.models.classifier.AVClassifier`, in place:
low-rank updates of linear layers (:func:`add_lora`, LoRA) and bottleneck adapters after every block's MLP
(:func:`add_adapters`). Each starts as an identity update, so before training the model computes exactly what it
computed before. The methods that train them: :mod:`uvav.methods.lora`, :mod:`uvav.methods.adapter`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from uvav.models.classifier import AVClassifier, transformer_blocks


class LoRALinear(nn.Module):
    """A frozen linear layer plus a trainable low-rank update: ``x W^T + b + s * x A^T B^T``, ``s = alpha / r``.

    Takes over the wrapped layer's ``weight`` and ``bias`` parameters themselves (same tensors, same keys);
    ``lora_b`` starts at zero, so the output starts identical to the wrapped layer's.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        if rank <= 0:
            raise ValueError(f"LoRA rank must be positive, got {rank}")
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.register_parameter("bias", base.bias)
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_a = nn.Parameter(torch.empty(rank, self.in_features, **factory))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # as nn.Linear (and the LoRA paper's code)
        self.lora_b = nn.Parameter(torch.zeros(self.out_features, rank, **factory))
        self.rank, self.alpha, self.scaling = rank, alpha, alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias) + F.linear(F.linear(x, self.lora_a), self.lora_b) * self.scaling

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}, alpha={self.alpha}"


def add_lora(model: AVClassifier, rank: int, alpha: float, targets: list[str] | tuple[str, ...]) -> list[str]:
    """Wrap each ``nn.Linear`` at ``<block>.<target>`` (e.g. ``attn.qkv``) in :class:`LoRALinear`, in place.
    Returns the wrapped layers' names; raises when nothing matched or a layer already has LoRA."""
    wrapped = []
    for block_name, block in transformer_blocks(model):
        for target in targets:
            parent_name, _, attr = target.rpartition(".")
            try:
                parent = block.get_submodule(parent_name)
            except AttributeError:
                continue
            layer = getattr(parent, attr, None)
            if isinstance(layer, LoRALinear):
                raise ValueError(f"{block_name}.{target} already has LoRA (prepare applied twice?)")
            if isinstance(layer, nn.Linear):
                setattr(parent, attr, LoRALinear(layer, rank, alpha))
                wrapped.append(f"{block_name}.{target}")
    if not wrapped:
        raise ValueError(f"no nn.Linear matched the LoRA targets {list(targets)} in any transformer block")
    return wrapped


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
