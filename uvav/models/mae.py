"""CAV-MAE's self-supervised objective on an :class:`AVClassifier` backbone (docs/facts.md §9).

Read top to bottom:

1. Each modality's patch tokens (with position and modality embeddings) lose ``mask_ratio`` of their patches,
   chosen at random per sample; the visible ones pass the modality encoder.
2. **Contrastive**: each encoder's visible tokens (or, with ``contrastive_masked=False``, all its tokens in a
   second pass), normalised and mean-pooled, go through a projection head (BatchNorm ->
   Linear -> GELU -> Linear; without the BatchNorm the loss stays at ln(batch), docs/facts.md §9); a symmetric
   InfoNCE pulls a clip's audio and image together and pushes the other clips of the batch away.
3. **Masked autoencoding**: the visible tokens of both modalities pass the fusion (each attends to the other),
   the shared blocks and the final norm; a light decoder puts a mask token at every hidden patch, adds its own
   position and modality embeddings, and predicts each hidden patch's values, normalised per patch; the loss is
   the mean squared error on the hidden patches only.

``loss = mae_audio + mae_visual + contrastive_weight * contrastive`` (CAV-MAE's weights: 1, 1, 0.01). The
backbone keeps AVClassifier's keys, so its state dict is a checkpoint FT, PL, LoRA and adapters load.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from uvav.models.backbone import ModalityEncoder, sincos_2d, vit_block
from uvav.models.classifier import AVClassifier


@dataclass(frozen=True)
class Losses:
    """The terms of one step's loss (tensors while training, floats once reported)."""

    total: torch.Tensor
    mae_audio: torch.Tensor
    mae_visual: torch.Tensor
    contrastive: torch.Tensor

    def as_floats(self) -> dict[str, float]:
        names = ("total", "mae_audio", "mae_visual", "contrastive")
        return {name: float(getattr(self, name).detach()) for name in names}


def patchify(x: torch.Tensor, patch: int) -> torch.Tensor:
    """``[B, C, H, W]`` -> ``[B, N, C*patch*patch]``, patches row-major over (H, W) like the patch embedding."""
    return F.unfold(x, kernel_size=patch, stride=patch).transpose(1, 2)


def random_keep(batch: int, tokens: int, keep: int, generator: torch.Generator) -> torch.Tensor:
    """Indices ``[B, keep]`` of the visible tokens, a random subset per sample (drawn on the CPU)."""
    return torch.rand(batch, tokens, generator=generator).argsort(dim=1)[:, :keep]


def projection_head(dim: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm1d(dim), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, out))


class ModalityDecoder(nn.Module):
    """Mask tokens, decoder position + modality embeddings and the patch-value prediction of one modality."""

    def __init__(self, encoder: ModalityEncoder, dim: int, patch_values: int) -> None:
        super().__init__()
        self.num_tokens = encoder.num_tokens
        self.register_buffer("pos_embed", sincos_2d(dim, *encoder.grid))
        self.modality = nn.Parameter(torch.zeros(1, 1, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pred = nn.Linear(dim, patch_values)
        nn.init.trunc_normal_(self.modality, std=0.02)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def unshuffle(self, visible: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Visible decoder tokens back at their positions, mask tokens elsewhere, plus embeddings."""
        b, _, d = visible.shape
        full = self.mask_token.to(visible.dtype).expand(b, self.num_tokens, d).clone()
        full.scatter_(1, keep[..., None].expand(-1, -1, d), visible)
        return full + self.pos_embed + self.modality


class AVPretrainer(nn.Module):
    """An AVClassifier backbone (``self.backbone``; its head is not used) with CAV-MAE's decoder and projection
    heads."""

    def __init__(self, backbone: AVClassifier, mask_ratio: float = 0.75, contrastive_weight: float = 0.01,
                 temperature: float = 0.05, decoder_dim: int | None = None, decoder_depth: int = 1,
                 decoder_heads: int = 4, contrastive_masked: bool = True) -> None:
        super().__init__()
        self.backbone = backbone
        self.mask_ratio, self.contrastive_weight, self.temperature = mask_ratio, contrastive_weight, temperature
        self.contrastive_masked = contrastive_masked
        dim = backbone.norm.normalized_shape[0]
        decoder_dim = decoder_dim or dim
        self.patch_a = backbone.audio.patch_embed.proj.kernel_size[0]
        self.patch_v = backbone.visual.patch_embed.proj.kernel_size[0]
        self.proj_a, self.proj_v = projection_head(dim, dim), projection_head(dim, dim)
        self.decoder_embed = nn.Linear(dim, decoder_dim)
        self.decoder_a = ModalityDecoder(backbone.audio, decoder_dim, self.patch_a ** 2)
        self.decoder_v = ModalityDecoder(backbone.visual, decoder_dim, 3 * self.patch_v ** 2)
        self.decoder_blocks = nn.ModuleList(vit_block(decoder_dim, decoder_heads, 4.0) for _ in range(decoder_depth))
        self.decoder_norm = nn.LayerNorm(decoder_dim)

    def _visible(self, encoder: ModalityEncoder, x: torch.Tensor, generator: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder outputs of the visible tokens ``[B, K, D]`` and their indices ``[B, K]``."""
        tokens = encoder.embed(x)
        b, n, d = tokens.shape
        keep = random_keep(b, n, max(1, round(n * (1 - self.mask_ratio))), generator).to(x.device)
        tokens = tokens.gather(1, keep[..., None].expand(-1, -1, d))
        for block in encoder.blocks:
            tokens = block(tokens)
        return tokens, keep

    def forward(self, audio: torch.Tensor, visual: torch.Tensor, generator: torch.Generator) -> Losses:
        """The losses of a batch: fbank ``[B, T, F]``, images ``[B, 3, H, W]``; masks drawn from ``generator``."""
        model = self.backbone
        audio = audio.transpose(1, 2).unsqueeze(1)  # [B, 1, F, T], the encoder's layout
        a, keep_a = self._visible(model.audio, audio, generator)
        v, keep_v = self._visible(model.visual, visual, generator)
        if self.contrastive_masked:  # CAV-MAE: the visible tokens of the same pass
            contrastive = self._contrastive(model.norm(a).mean(dim=1), model.norm(v).mean(dim=1))
        else:  # a second pass of the encoders over every patch
            contrastive = self._contrastive(model.norm(model.audio(audio)).mean(dim=1),
                                            model.norm(model.visual(visual)).mean(dim=1))
        for layer in model.fusion:
            a, v = layer(a, v, None)
        x = torch.cat([a, v], dim=1)
        for block in model.shared:
            x = block(x)
        x = self.decoder_embed(model.norm(x))
        x = torch.cat([self.decoder_a.unshuffle(x[:, : a.shape[1]], keep_a),
                       self.decoder_v.unshuffle(x[:, a.shape[1]:], keep_v)], dim=1)
        for block in self.decoder_blocks:
            x = block(x)
        x = self.decoder_norm(x)
        n_a = self.decoder_a.num_tokens
        mae_a = _masked_mse(self.decoder_a.pred(x[:, :n_a]), patchify(audio, self.patch_a), keep_a)
        mae_v = _masked_mse(self.decoder_v.pred(x[:, n_a:]), patchify(visual, self.patch_v), keep_v)
        return Losses(mae_a + mae_v + self.contrastive_weight * contrastive, mae_a, mae_v, contrastive)

    def _contrastive(self, pooled_a: torch.Tensor, pooled_v: torch.Tensor) -> torch.Tensor:
        """Symmetric InfoNCE between the projected audio and visual embeddings of the batch."""
        za = F.normalize(self.proj_a(pooled_a.float()), dim=-1)
        zv = F.normalize(self.proj_v(pooled_v.float()), dim=-1)
        logits = za @ zv.T / self.temperature
        target = torch.arange(len(logits), device=logits.device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def _masked_mse(pred: torch.Tensor, patches: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean squared error on the hidden patches, each target patch normalised to zero mean, unit variance."""
    mean, var = patches.mean(dim=-1, keepdim=True), patches.var(dim=-1, keepdim=True)
    target = (patches - mean) / (var + 1e-6).sqrt()
    hidden = torch.ones(patches.shape[:2], device=patches.device)
    hidden.scatter_(1, keep, 0.0)
    per_patch = ((pred.float() - target.float()) ** 2).mean(dim=-1)
    return (per_patch * hidden).sum() / hidden.sum()
