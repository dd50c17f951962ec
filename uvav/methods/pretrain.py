"""``method=pretrain``: CAV-MAE's self-supervised pretraining (masked autoencoding + audio-visual contrastive) on
the training pairs without labels (:mod:`uvav.models.mae`), trained on the shared loop
(:func:`uvav.train.fit_masked`: resumable after every epoch, curves under stage ``pretrain``). Its job trains no
classifier and reports no accuracy: it writes ``model.pt``, the backbone's weights under ``"model"`` in
AVClassifier's layout (no head), which ``backbone.checkpoint=<job>/model.pt`` loads for FT, PL, LoRA and
adapters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from uvav.config import MethodConfig, require
from uvav.methods import METHODS, Method, schedule

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from uvav.pipeline import Context

PRETRAIN = "pretrain"  # the method's name, and its run's name in logs and training curves
CHECKPOINT = "last_pretrain.pt"


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
        """Train, write ``<job>/model.pt`` and return the job's metrics (losses per epoch on train and
        validation)."""
        import time

        from uvav.models.classifier import count_parameters
        from uvav.models.mae import AVPretrainer
        from uvav.outputs import atomic_torch_save, provenance
        from uvav.train import Feed, FitSettings, fit_masked
        from uvav.weights import build_model

        started = time.perf_counter()
        cfg = ctx.cfg
        backbone, weights = build_model(cfg, ctx.data.num_classes, ctx.device)
        m = cfg.method
        model = AVPretrainer(backbone, m.mask_ratio, m.contrastive_weight, m.temperature, m.decoder_dim or None,
                             m.decoder_depth, cfg.backbone.num_heads, m.contrastive_masked).to(ctx.device)
        model.backbone.head.requires_grad_(False)  # not part of the objective, and not saved
        epochs, lr = schedule(cfg)
        with ctx.timing.measure(ctx.timing.train, PRETRAIN):
            history, resources = fit_masked(
                PRETRAIN, model, Feed(ctx.data.train, ctx.data.val, ctx.noise, ctx.options),
                FitSettings.of(cfg.trainer), epochs=epochs, lr=lr, weight_decay=cfg.trainer.weight_decay,
                device=ctx.device, seed=cfg.seed, autocast=ctx.autocast, checkpoint_path=ctx.resume_dir / CHECKPOINT,
                logger=ctx.logger)
        backbone_state = {k: v for k, v in model.backbone.state_dict().items() if not k.startswith("head.")}
        atomic_torch_save(ctx.job_dir / "model.pt", {"model": backbone_state, "kind": "uvav-pretrained-backbone",
                                                     "provenance": provenance()})
        final = history[-1] if history else {}
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        return {
            "pretraining": {
                "history": history, "final": final, "resources": resources,
                "params": {"trainable": trainable, "backbone": count_parameters(model.backbone),
                           "decoder_and_heads": count_parameters(model) - count_parameters(model.backbone)},
                "checkpoint": "model.pt (backbone weights under 'model', no head): load with "
                              "backbone.checkpoint=<job>/model.pt",
                "validation": "losses on the validation split, masks fixed by the seed, batches of trainer.batch_size",
            },
            "objective": {"name": "val_loss", "value": final.get("val_total", float("nan"))},
            "split": {**ctx.data.sizes(), "how": ctx.data.info.get("split")}, "data_info": ctx.data.info,
            "initial_weights": weights, "wall_time_s": round(time.perf_counter() - started, 2),
            "device": str(ctx.device),
        }


METHODS.register(Pretraining())
