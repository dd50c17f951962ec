"""The audio-visual classifier: encoders -> fusion -> shared blocks -> mean pool -> head.

``encode`` and ``classify_encoded`` split the forward pass where attention-level prompts start to matter,
so that frozen encoder outputs can be computed once and reused (see ``uvav.train``); ``pool_encoded`` stops before
the head, so that models differing only in their heads classify the same pooled features.
"""

from __future__ import annotations

import torch
from timm.models.vision_transformer import Block
from torch import nn

from uvav.models.backbone import ModalityEncoder, vit_block
from uvav.models.fusion import CrossBlock, FusionLayer
from uvav.models.grids import audio_grid, image_grid
from uvav.models.prompts import Prompts


class AVClassifier(nn.Module):
    def __init__(
        self, num_classes: int, target_length: int, num_mel_bins: int, image_size: int, embed_dim: int = 64,
        num_heads: int = 4, depth: int = 2, shared_depth: int = 0, fusion_depth: int = 1,
        mlp_ratio: float = 4.0, patch_size: int = 16, image_patch_size: int | None = None,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        image_patch_size = image_patch_size or patch_size
        common = dict(embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
                      drop_path=drop_path)
        self.audio = ModalityEncoder(1, patch_size=patch_size,
                                     grid=audio_grid(num_mel_bins, target_length, patch_size), **common)
        self.visual = ModalityEncoder(3, patch_size=image_patch_size,
                                      grid=image_grid(image_size, image_patch_size), **common)
        self.fusion = nn.ModuleList(
            FusionLayer(embed_dim, num_heads, mlp_ratio, drop_path) for _ in range(fusion_depth)
        )
        self.shared = nn.ModuleList(vit_block(embed_dim, num_heads, mlp_ratio, drop_path) for _ in range(shared_depth))
        self.norm = nn.LayerNorm(embed_dim)  # eps 1e-5 like CAV-MAE's final norm
        self.head = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, num_classes))
        self.apply(_init_weights)
        # a module (a, v) -> (a, v) applied to the encoder outputs before the fusion: stand-in tokens for a missing
        # modality (uvav.models.standin); None: the tokens go to the fusion as they are
        self.standins: nn.Module | None = None

    @classmethod
    def from_config(cls, backbone, data, num_classes: int) -> AVClassifier:
        """Build from a ``backbone`` and a ``data`` config node."""
        return cls(
            num_classes=num_classes, target_length=data.target_length, num_mel_bins=data.num_mel_bins,
            image_size=data.image_size, embed_dim=backbone.embed_dim, num_heads=backbone.num_heads,
            depth=backbone.depth, shared_depth=backbone.shared_depth, fusion_depth=backbone.fusion_depth,
            mlp_ratio=backbone.mlp_ratio, patch_size=backbone.patch_size,
            image_patch_size=backbone.image_patch_size, drop_path=backbone.drop_path,
        )

    def compile_blocks(self) -> None:
        """``torch.compile`` every transformer block in place (state-dict keys unchanged)."""
        for module in (*self.audio.blocks, *self.visual.blocks, *self.fusion, *self.shared):
            module.compile()

    def encode(
        self, audio: torch.Tensor, visual: torch.Tensor, prompts: Prompts | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Modality encoders: fbank ``[B, T, F]`` and image ``[B, 3, H, W]`` -> tokens ``[B, N, D]`` each."""
        prompts = prompts or Prompts()
        return self.encode_audio(audio, prompts.input_audio), self.encode_visual(visual, prompts.input_visual)

    def encode_audio(self, audio: torch.Tensor, prompt: list[torch.Tensor] | None = None) -> torch.Tensor:
        """The audio encoder alone (the two encoders never see each other's input): fbank ``[B, T, F]``."""
        return self.audio(audio.transpose(1, 2).unsqueeze(1), prompt)

    def encode_visual(self, visual: torch.Tensor, prompt: list[torch.Tensor] | None = None) -> torch.Tensor:
        """The visual encoder alone: image ``[B, 3, H, W]``."""
        return self.visual(visual, prompt)

    def classify_encoded(
        self, a: torch.Tensor, v: torch.Tensor, prompts: Prompts | None = None
    ) -> torch.Tensor:
        """Fusion (with attention-level prompts), shared blocks (with shared-block prompts, deep like the encoders'),
        mean pool over the modality tokens, head -> logits."""
        return self.head(self.pool_encoded(a, v, prompts))

    def pool_encoded(
        self, a: torch.Tensor, v: torch.Tensor, prompts: Prompts | None = None
    ) -> torch.Tensor:
        """Everything of :meth:`classify_encoded` but the head: the pooled features ``[B, D]`` the head reads."""
        prompts = prompts or Prompts()
        if self.standins is not None:
            a, v = self.standins(a, v)
        for i, layer in enumerate(self.fusion):
            a, v = layer(a, v, prompts.fusion_layer(i))
        x = torch.cat([a, v], dim=1)
        tokens = x.shape[1]
        for i, block in enumerate(self.shared):
            if i < len(prompts.shared):
                x = torch.cat([x[:, :tokens], prompts.shared[i].to(x.dtype)], dim=1)
            x = block(x)
        return self.norm(x[:, :tokens]).mean(dim=1)

    def input_summary(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        """Per sample, the mean and std over tokens of each modality's patch embeddings ``[B, 4D]``: what the router
        of input-conditioned prompts sees (a missing modality has std 0, a noisy one a larger std)."""
        a = self.audio.patch_embed(audio.transpose(1, 2).unsqueeze(1))
        v = self.visual.patch_embed(visual)
        return torch.cat([a.mean(1), a.std(1), v.mean(1), v.std(1)], dim=1)

    def forward(self, audio: torch.Tensor, visual: torch.Tensor, prompts: Prompts | None = None) -> torch.Tensor:
        a, v = self.encode(audio, visual, prompts)
        return self.classify_encoded(a, v, prompts)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def transformer_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every transformer block (``name``, module): encoder blocks, fusion cross-blocks, shared blocks."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, (Block, CrossBlock))]
