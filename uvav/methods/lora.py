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

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from uvav.config import require
from uvav.methods import METHODS, FrozenBaseConfig, PeftMethod

if TYPE_CHECKING:
    from torch import nn

    from uvav.models.classifier import AVClassifier

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
        from uvav.models.peft import add_lora

        add_lora(model, int(method.lora_rank), lora_alpha(method), list(method.lora_targets))
        return model

    def new_parameters(self, model: AVClassifier) -> list[nn.Parameter]:
        from uvav.models.peft import LoRALinear

        return [p for m in model.modules() if isinstance(m, LoRALinear) for p in (m.lora_a, m.lora_b)]


METHODS.register(LoRA())


MOVED_TO_MODELS = ('LoRALinear', 'add_lora')  # the layers live with the models now (uvav/models/peft.py)


def __getattr__(name: str) -> Any:
    """The layers' old import path keeps working, with a warning saying where they moved."""
    if name in MOVED_TO_MODELS:
        import warnings

        from uvav.models import peft

        warnings.warn(f"{__name__}.{name} moved to uvav.models.peft.{name}", DeprecationWarning, stacklevel=2)
        return getattr(peft, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
