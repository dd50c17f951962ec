"""``method=pretrain``: CAV-MAE's self-supervised pretraining (masked autoencoding + audio-visual contrastive) on
the training pairs without labels (:mod:`uvav.pretraining`, :mod:`uvav.models.pretraining`). Its job trains no
classifier and reports no accuracy: it writes a backbone checkpoint that ``backbone.checkpoint=<job>/model.pt``
loads for FT, PL, LoRA and adapters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from uvav.config import MethodConfig, require
from uvav.methods import METHODS, Method

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from uvav.pipeline import Context

PRETRAIN = "pretrain"


@dataclass
class PretrainConfig(MethodConfig):
    name: str = PRETRAIN
    mask_ratio: float = 0.75  # share of each modality's patches hidden from the encoders (CAV-MAE: 0.75)
    contrastive_weight: float = 0.01  # lambda_c, weight of the contrastive term (CAV-MAE: 0.01)
    temperature: float = 0.05  # of the InfoNCE logits (CAV-MAE: 0.05)
    contrastive_masked: bool = True  # contrastive on the visible tokens (CAV-MAE); false: a second, unmasked pass
    decoder_dim: int = 0  # width of the light decoder; 0: the backbone's
    decoder_depth: int = 1  # transformer blocks of the decoder


class Pretraining(Method):
    name = PRETRAIN
    schema = PretrainConfig
    order = 90
    classifies = False
    title = "Pretraining"
    summary = "self-supervised pretraining: a backbone checkpoint, no classifier"
    not_distributed = ("runs in one process (its contrastive loss and BatchNorm heads would see only each rank's "
                       "part of a batch)")

    def check(self, cfg: DictConfig) -> None:
        m = cfg.method
        require(0.0 <= m.mask_ratio < 1.0, "method.mask_ratio", m.mask_ratio, "in [0, 1)")
        require(m.contrastive_weight >= 0, "method.contrastive_weight", m.contrastive_weight, ">= 0")
        require(m.temperature > 0, "method.temperature", m.temperature, "> 0")
        require(m.decoder_dim >= 0 and m.decoder_dim % cfg.backbone.num_heads == 0, "method.decoder_dim",
                m.decoder_dim, f"0 (the backbone's width) or a positive multiple of backbone.num_heads "
                f"({cfg.backbone.num_heads})")
        require(m.decoder_depth >= 1, "method.decoder_depth", m.decoder_depth, "an integer >= 1")
        require(cfg.trainer.batch_size >= 2, "trainer.batch_size", cfg.trainer.batch_size,
                ">= 2 (the contrastive loss and the projection heads' BatchNorm need two pairs per batch)")
        require(cfg.data.label_fraction == 1.0, "data.label_fraction", cfg.data.label_fraction,
                "1.0: pretraining uses every training pair and no label; set the fraction on the jobs that load "
                "its checkpoint")

    def run_job(self, ctx: Context) -> dict[str, Any]:
        from uvav.pretraining import pretrain

        return pretrain(ctx)


METHODS.register(Pretraining())
