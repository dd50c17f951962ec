"""``method=lora``: low-rank updates of the frozen FT model's linear layers (a baseline beside prompts).

``y = W x + b + (alpha / r) * B A x`` on every ``nn.Linear`` of every transformer block (modality encoders,
fusion cross-blocks, shared blocks) named in ``method.lora_targets`` (default: the attention projections
``attn.qkv``, ``attn.proj`` of the timm blocks and ``attn.q``, ``attn.kv``, ``attn.proj`` of the fusion
cross-attention). ``B`` starts at zero, so before training the model computes exactly what the FT model computes.

State-dict keys: the wrapped weights keep theirs (``...attn.qkv.weight``), so an FT state dict is a subset of a
LoRA one; new: ``<linear>.lora_a`` ``[r, in]`` and ``<linear>.lora_b`` ``[out, r]``
(e.g. ``audio.blocks.0.attn.qkv.lora_a``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from uvav.config import require
from uvav.methods import METHODS, FrozenBaseConfig, PeftMethod
from uvav.models.classifier import AVClassifier, transformer_blocks

# nn.Linear layers of a transformer block that LoRA can wrap (timm Block: attn.qkv/proj, mlp.fc1/fc2; fusion
# cross-block: attn.q/kv/proj, mlp.fc1/fc2)
LORA_TARGETS = ("attn.qkv", "attn.q", "attn.kv", "attn.proj", "mlp.fc1", "mlp.fc2")


@dataclass
class LoraConfig(FrozenBaseConfig):
    name: str = "lora"
    lora_rank: int = 4  # rank r of each low-rank update B A
    lora_alpha: float | None = None  # the update is scaled by alpha / r; None -> 2 * lora_rank
    # the nn.Linear layers wrapped in every encoder, fusion and shared block (names in LORA_TARGETS)
    lora_targets: list[str] = field(default_factory=lambda: ["attn.qkv", "attn.q", "attn.kv", "attn.proj"])


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


def lora_alpha(method: Any) -> float:
    """``method.lora_alpha``, or ``2 * method.lora_rank`` when unset."""
    return float(method.lora_alpha) if method.lora_alpha is not None else 2.0 * method.lora_rank


class LoRA(PeftMethod):
    name = "lora"
    schema = LoraConfig
    order = 20
    title = "LoRA"
    comparison_order = 10
    summary = "frozen FT model with LoRA updates, no prompts"
    variant_order = 2
    reference = True  # the variant table's baseline: prompt variants must come near it with fewer parameters

    def check(self, cfg) -> None:
        super().check(cfg)
        m = cfg.method
        require(m.lora_rank > 0, "method.lora_rank", m.lora_rank, "a positive integer")
        require(m.lora_alpha is None or m.lora_alpha > 0, "method.lora_alpha", m.lora_alpha,
                "> 0, or null for 2 * method.lora_rank")
        require(len(m.lora_targets) > 0, "method.lora_targets", [], f"at least one of {list(LORA_TARGETS)}")
        for target in m.lora_targets:
            require(target in LORA_TARGETS, "method.lora_targets", target, f"each one of {list(LORA_TARGETS)}")

    def settings(self, method: Any, prompt: Any) -> str:
        return f"r={method.get('lora_rank')}"

    def prepare(self, model: AVClassifier, method: Any) -> AVClassifier:
        add_lora(model, int(method.lora_rank), lora_alpha(method), list(method.lora_targets))
        return model

    def new_parameters(self, model: AVClassifier) -> list[nn.Parameter]:
        return [p for m in model.modules() if isinstance(m, LoRALinear) for p in (m.lora_a, m.lora_b)]


METHODS.register(LoRA())
