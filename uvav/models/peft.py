"""Parameter-efficient baselines on the frozen FT model: LoRA and bottleneck adapters.

Both start as the identity (LoRA's ``B`` and the adapter's up-projection are zero), so before training the
model computes exactly what the FT model computes. Where they go:

- LoRA (``method=lora``): ``y = W x + b + (alpha / r) * B A x`` on every ``nn.Linear`` of every transformer block
  (modality encoders, fusion cross-blocks, shared blocks) named in ``method.lora_targets`` (default: the
  attention projections ``attn.qkv``, ``attn.proj`` of the timm blocks and ``attn.q``, ``attn.kv``,
  ``attn.proj`` of the fusion cross-attention).
- Adapters (``method=adapter``): ``h + up(GELU(down(h)))`` with ``h = mlp(x)``, after the MLP of every
  transformer block and fusion cross-block (Pfeiffer placement, inside the block's residual branch).

State-dict keys: the original weights keep their keys (``...attn.qkv.weight``, ``...mlp.fc1.weight``), so an FT
state dict is a subset of a LoRA/adapter one. New keys: ``<linear>.lora_a`` ``[r, in]`` and ``<linear>.lora_b``
``[out, r]`` (e.g. ``audio.blocks.0.attn.qkv.lora_a``); ``<block>.mlp.adapter.down.{weight,bias}`` and
``<block>.mlp.adapter.up.{weight,bias}`` (e.g. ``fusion.0.audio_from_visual.mlp.adapter.up.weight``).
To load a saved model, build the AVClassifier, apply :func:`build_peft_model` with the run's ``method`` config,
then ``load_state_dict``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn

from uvav.models.classifier import AVClassifier
from uvav.models.fusion import CrossBlock

PEFT_METHODS = ("lora", "adapter")


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


def transformer_blocks(model: AVClassifier) -> list[tuple[str, nn.Module]]:
    """Every transformer block (``name``, module): encoder blocks, fusion cross-blocks, shared blocks."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, (Block, CrossBlock))]


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
                raise ValueError(f"{block_name}.{target} already has LoRA (build_peft_model applied twice?)")
            if isinstance(layer, nn.Linear):
                setattr(parent, attr, LoRALinear(layer, rank, alpha))
                wrapped.append(f"{block_name}.{target}")
    if not wrapped:
        raise ValueError(f"no nn.Linear matched the LoRA targets {list(targets)} in any transformer block")
    return wrapped


def add_adapters(model: AVClassifier, bottleneck: int) -> list[str]:
    """Replace every transformer block's ``mlp`` by :class:`AdaptedMlp`, in place. Returns the blocks' names."""
    names = []
    for name, block in transformer_blocks(model):
        if isinstance(block.mlp, AdaptedMlp):
            raise ValueError(f"{name}.mlp already has an adapter (build_peft_model applied twice?)")
        block.mlp = AdaptedMlp(block.mlp, bottleneck)
        names.append(name)
    return names


def lora_alpha(method: Any) -> float:
    """``method.lora_alpha``, or ``2 * method.lora_rank`` when unset."""
    return float(method.lora_alpha) if method.lora_alpha is not None else 2.0 * method.lora_rank


def build_peft_model(model: AVClassifier, method: Any) -> AVClassifier:
    """Insert the layers of ``method.name`` (``lora`` or ``adapter``) into ``model`` in place and return it;
    any other method returns ``model`` unchanged. New parameters require grad, existing ones keep their flags
    (freeze them first to train only the new layers). Apply it to a freshly built AVClassifier with the run's
    ``method`` config before ``load_state_dict`` of a saved LoRA/adapter model."""
    if method.name == "lora":
        add_lora(model, int(method.lora_rank), lora_alpha(method), list(method.lora_targets))
    elif method.name == "adapter":
        add_adapters(model, int(method.adapter_bottleneck))
    return model


def peft_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters that LoRA / adapters added (not the head, not the wrapped weights)."""
    params: list[nn.Parameter] = []
    for module in model.modules():
        if isinstance(module, LoRALinear):
            params += [module.lora_a, module.lora_b]
        elif isinstance(module, Adapter):
            params += list(module.parameters())
    return params
