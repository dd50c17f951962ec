"""Modality encoders of a CAV-MAE-style model: patch, position and modality embeddings, then timm blocks.

Audio enters as a normalised fbank ``[B, T, F]`` and is laid out like CAV-MAE, ``[B, 1, F, T]``, so a
128 x 1024 fbank with 16 px patches gives an 8 x 64 grid (512 tokens). Images ``[B, 3, H, W]``; 224 px with
16 px patches gives 196 tokens.
"""

from __future__ import annotations

import torch
from timm.layers import Mlp
from timm.models.vision_transformer import Block
from torch import nn


def vit_block(dim: int, num_heads: int, mlp_ratio: float, drop_path: float = 0.0) -> Block:
    """A pre-norm ViT block as CAV-MAE builds it (timm 0.4.5's ``Block``), every default that moved between timm
    releases pinned: ``torch.nn.LayerNorm`` (eps 1e-5), exact GELU, qkv bias, no qk-norm, no layer scale."""
    return Block(dim, num_heads, mlp_ratio, qkv_bias=True, qk_norm=False, init_values=None, drop_path=drop_path,
                 act_layer=nn.GELU, norm_layer=nn.LayerNorm, mlp_layer=Mlp)


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """Sine-cosine embedding ``[len(positions), dim]`` (dim even)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    angles = positions.double()[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def sincos_2d(dim: int, grid_h: int, grid_w: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding ``[1, grid_h * grid_w, dim]``, row-major over (h, w)."""
    if dim % 4:
        raise ValueError(f"embed_dim must be a multiple of 4 for 2-D sin-cos embeddings, got {dim}")
    hh, ww = torch.meshgrid(torch.arange(grid_h), torch.arange(grid_w), indexing="ij")
    emb_h = sincos_1d(dim // 2, hh.flatten())
    emb_w = sincos_1d(dim // 2, ww.flatten())
    return torch.cat([emb_w, emb_h], dim=1).unsqueeze(0)


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> tokens ``[B, N, D]`` with a strided convolution."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class ModalityEncoder(nn.Module):
    """Tokens + position + modality embedding, optional prompt tokens, then ``depth`` transformer blocks.

    Input-level prompts, one ``[B, P, D]`` tensor per block from block 0: block 0's are concatenated after the patch
    tokens; a later block's replace the prompt tokens' outputs of the block before (deep prompts); after the last
    prompted block the prompt tokens pass through the remaining blocks. They are dropped from the output, so the
    output always has one token per patch.
    """

    def __init__(
        self, in_chans: int, embed_dim: int, patch_size: int, grid: tuple[int, int], depth: int,
        num_heads: int, mlp_ratio: float, drop_path: float,
    ) -> None:
        super().__init__()
        self.grid = grid
        self.patch_embed = PatchEmbed(in_chans, embed_dim, patch_size)
        self.register_buffer("pos_embed", sincos_2d(embed_dim, *grid))
        self.modality = nn.Parameter(torch.zeros(1, 1, embed_dim))
        nn.init.trunc_normal_(self.modality, std=0.02)
        self.blocks = nn.ModuleList(vit_block(embed_dim, num_heads, mlp_ratio, drop_path) for _ in range(depth))

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Patch tokens with position and modality embeddings ``[B, N, D]``, before any block."""
        return self.patch_embed(x) + self.pos_embed + self.modality

    def forward(self, x: torch.Tensor, prompts: list[torch.Tensor] | None = None) -> torch.Tensor:
        prompts = prompts or []
        if len(prompts) > len(self.blocks):
            raise ValueError(f"prompts for {len(prompts)} blocks, but the encoder has {len(self.blocks)}")
        tokens = self.embed(x)
        for i, block in enumerate(self.blocks):
            if i < len(prompts):
                tokens = torch.cat([tokens[:, : self.num_tokens], prompts[i].to(tokens.dtype)], dim=1)
            tokens = block(tokens)
        return tokens[:, : self.num_tokens]
