"""The job of ``method=pretrain``: CAV-MAE's self-supervised objective on the training pairs, without labels.

Pairs stream from the training split like every stage's samples (uncorrupted, no augmentation). After every
epoch the whole state (weights, optimizer, schedule, history) goes to a resumable checkpoint, so a job killed at
any point restarts from its last finished epoch; masks are drawn from generators fixed by (seed, epoch), so a
resumed job ends where an uninterrupted one would. Losses per step and per epoch also go to the training curves
(``ctx.logger``, stage ``pretrain``). The job writes ``model.pt``: the backbone's weights under
``"model"`` in AVClassifier's layout (no head), which ``backbone.checkpoint=<job>/model.pt`` loads.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import torch
from tqdm.auto import tqdm

from uvav.cases import Case
from uvav.data.loading import EvalSet, TrainSet, epoch_order
from uvav.evaluation import SALTS
from uvav.methods import schedule
from uvav.models.classifier import count_parameters
from uvav.models.pretraining import AVPretrainer
from uvav.outputs import atomic_torch_save, load_checkpoint, provenance, save_checkpoint
from uvav.pipeline import Context, build_model
from uvav.resources import ResourceMeter
from uvav.scenarios import sample_generator
from uvav.train import optimizer_step, warmup_cosine

log = logging.getLogger(__name__)
CHECKPOINT = "last_pretrain.pt"
STAGE = "pretrain"  # its name in logs and training curves
COMPLETE = [Case.COMPLETE.value]


def pretrain(ctx: Context) -> dict[str, Any]:
    """Train, write ``<job>/model.pt`` and return the job's metrics (losses per epoch on train and validation)."""
    started = time.perf_counter()
    cfg, device = ctx.cfg, ctx.device
    backbone, weights = build_model(ctx)
    m = cfg.method
    model = AVPretrainer(backbone, m.mask_ratio, m.contrastive_weight, m.temperature, m.decoder_dim or None,
                         m.decoder_depth, cfg.backbone.num_heads, m.contrastive_masked).to(device)
    model.backbone.head.requires_grad_(False)  # not part of the objective, and not saved
    params = [p for p in model.parameters() if p.requires_grad]
    epochs, lr = schedule(cfg)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.trainer.weight_decay)
    pairs = _pairs_per_epoch(len(ctx.data.train), cfg.trainer.batch_size)
    steps = math.ceil(pairs / cfg.trainer.batch_size)
    scheduler = warmup_cosine(optimizer, steps, epochs, cfg.trainer.warmup_epochs)
    meter, history, start = ResourceMeter(device), [], 0
    checkpoint = ctx.resume_dir / CHECKPOINT
    state = load_checkpoint(checkpoint)  # None when absent, or discarded (WARNING) when it fails its sha256
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history, start, meter.epoch_times = state["history"], state["epoch"] + 1, list(state["epoch_times"])
        log.info("pretrain: resumed from %s at epoch %d", checkpoint, start)

    meter.begin_training()
    bar = tqdm(range(start, epochs), desc=STAGE, disable=not cfg.trainer.progress, initial=start, total=epochs)
    for epoch in bar:
        model.train()
        sums: dict[str, float] = {}
        with meter.epoch():
            masks = sample_generator("pretrain-masks", cfg.seed, epoch)
            batches = tqdm(_loader(ctx, epoch, pairs), desc=f"epoch {epoch}", total=steps, leave=False,
                           disable=not cfg.trainer.progress)
            for step, (audio, visual, *_) in enumerate(batches):
                with ctx.autocast():
                    losses = model(audio.to(device, non_blocking=True), visual.to(device, non_blocking=True), masks)
                lr = scheduler.get_last_lr()[0]  # the rate this step uses
                total = optimizer_step(losses.total, optimizer, scheduler, params, cfg.trainer.grad_clip, STAGE,
                                       f"epoch {epoch}, step {step}; last good checkpoint: {checkpoint}")
                ctx.logger.step(STAGE, epoch, step, {"train_loss": total, "lr": lr})
                for name, value in losses.as_floats().items():
                    sums[name] = sums.get(name, 0.0) + value
        record = {"epoch": epoch, **{f"train_{k}": v / steps for k, v in sums.items()},
                  **{f"val_{k}": v for k, v in _validation_losses(ctx, model).items()},
                  "time_s": meter.epoch_times[-1]}
        history.append(record)
        ctx.logger.epoch(STAGE, epoch, {**{k: v for k, v in record.items() if k != "epoch"}, "lr": lr})
        log.info("pretrain epoch %d: %s", epoch, ", ".join(f"{k} {v:.4f}" for k, v in record.items()
                                                          if k != "epoch"))
        bar.set_postfix(loss=f"{record['train_total']:.3f}", val=f"{record['val_total']:.3f}")
        save_checkpoint(checkpoint, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "history": history, "epoch": epoch, "epoch_times": meter.epoch_times})
    meter.end_training()

    backbone_state = {k: v for k, v in model.backbone.state_dict().items() if not k.startswith("head.")}
    atomic_torch_save(ctx.job_dir / "model.pt", {"model": backbone_state, "kind": "uvav-pretrained-backbone",
                                                 "provenance": provenance()})
    final = history[-1] if history else {}
    return {
        "pretraining": {
            "history": history, "final": final, "resources": meter.summary(),
            "params": {"trainable": sum(p.numel() for p in params), "backbone": count_parameters(model.backbone),
                       "decoder_and_heads": count_parameters(model) - count_parameters(model.backbone)},
            "checkpoint": "model.pt (backbone weights under 'model', no head): load with "
                          "backbone.checkpoint=<job>/model.pt",
            "validation": "losses on the validation split, masks fixed by the seed, batches of trainer.batch_size",
        },
        "objective": {"name": "val_loss", "value": final.get("val_total", float("nan"))},
        "split": {**ctx.data.sizes(), "how": ctx.data.info.get("split")}, "data_info": ctx.data.info,
        "initial_weights": weights, "wall_time_s": round(time.perf_counter() - started, 2), "device": str(device),
    }


def _pairs_per_epoch(n: int, batch_size: int) -> int:
    """Pairs an epoch uses: all but a last batch of one pair (BatchNorm and the contrastive loss need two)."""
    return n - (n % batch_size == 1)


def _loader(ctx: Context, epoch: int, pairs: int):
    """The first ``pairs`` training pairs of the epoch's order, uncorrupted and unaugmented."""
    dataset = TrainSet(ctx.data.train, ctx.noise, COMPLETE, ctx.cfg.seed, epoch)
    order = epoch_order(len(dataset), ctx.cfg.seed, epoch)[:pairs]
    return ctx.options.loader(dataset, ctx.cfg.trainer.batch_size, order)


@torch.no_grad()
def _validation_losses(ctx: Context, model: AVPretrainer) -> dict[str, float]:
    """Mean losses over the validation pairs (eval mode; the same masks every epoch)."""
    model.eval()
    masks = sample_generator("pretrain-val-masks", ctx.cfg.seed)
    sums: dict[str, float] = {}
    batches = 0
    dataset = EvalSet(ctx.data.val, ctx.noise, COMPLETE, SALTS["val"])
    for audio, visual, *_ in ctx.options.loader(dataset, ctx.cfg.trainer.batch_size):
        with ctx.autocast():
            losses = model(audio.to(ctx.device), visual.to(ctx.device), masks)
        for name, value in losses.as_floats().items():
            sums[name] = sums.get(name, 0.0) + value
        batches += 1
    return {k: v / max(1, batches) for k, v in sums.items()}
