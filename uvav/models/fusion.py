"""Fusion: bidirectional cross-attention with optional prompt tokens in the Keys and Values.

Each fusion layer has two cross-attention blocks that run side by side on the same inputs:
audio queries over visual keys/values, and visual queries over audio keys/values (residual + MLP each).
Attention-level prompts are ``[B, P, D]`` tokens appended to a block's Keys and to its Values
(prefix tuning: they live in key/value space, after the projections).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp
from torch import nn


class CrossAttention(nn.Module):
    """Multi-head attention of ``x`` (queries) over ``context`` (keys/values), with fused SDPA kernels."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, d = t.shape
        return t.view(b, n, self.num_heads, d // self.num_heads).transpose(1, 2)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor,
        prompt_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        k, v = self.kv(context).chunk(2, dim=-1)
        if prompt_kv is not None:
            pk, pv = prompt_kv
            k = torch.cat([k, pk.to(k.dtype)], dim=1)
            v = torch.cat([v, pv.to(v.dtype)], dim=1)
        out = F.scaled_dot_product_attention(self._heads(self.q(x)), self._heads(k), self._heads(v))
        return self.proj(out.transpose(1, 2).flatten(2))


class CrossBlock(nn.Module):
    """Pre-norm cross-attention block: ``x + attn(norm(x), norm(ctx))``, then ``x + mlp(norm(x))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(dim, eps=1e-6)
        self.norm_kv = nn.LayerNorm(dim, eps=1e-6)
        self.attn = CrossAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(
        self, x: torch.Tensor, context: torch.Tensor,
        prompt_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm_q(x), self.norm_kv(context), prompt_kv))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class FusionLayer(nn.Module):
    """One bidirectional step: ``a' = a <- v`` and ``v' = v <- a``, both computed from the same (a, v)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop_path: float = 0.0) -> None:
        super().__init__()
        self.audio_from_visual = CrossBlock(dim, num_heads, mlp_ratio, drop_path)
        self.visual_from_audio = CrossBlock(dim, num_heads, mlp_ratio, drop_path)

    def forward(
        self, a: torch.Tensor, v: torch.Tensor,
        prompts: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        prompts = prompts or {}
        a_new = self.audio_from_visual(a, v, prompts.get("audio_from_visual"))
        v_new = self.visual_from_audio(v, a, prompts.get("visual_from_audio"))
        return a_new, v_new


DIRECTIONS = ("audio_from_visual", "visual_from_audio")
