"""Training and scoring of every stage, and MAE pretraining, on one loop.

Modules, bottom up (each imports only those above it): :mod:`~uvav.train.stage` (what a stage trains and its
forward passes), :mod:`~uvav.train.settings` (FitSettings, Feed), :mod:`~uvav.train.schedules` (lr schedules),
:mod:`~uvav.train.scoring` (accuracy / mAP under every case and prompt mode), :mod:`~uvav.train.token_cache`
(cached encoder outputs of frozen stages), :mod:`~uvav.train.loop` (the loop: resume, checkpoints, curves, NaN),
:mod:`~uvav.train.fitting` (``fit``: a classification stage on the loop), :mod:`~uvav.train.self_supervised`
(``fit_masked``: MAE pretraining on the loop), :mod:`~uvav.train.shared` (a job's evaluation encodings, shared by
the stages that see the frozen base's encoder outputs unchanged), :mod:`~uvav.train.timing` (where a job's time
went).
"""

from uvav.train.fitting import FitResult, StageTrainee, classification_loss, fit, recipe_batch
from uvav.train.loop import Loop, Trainee, optimizer_step
from uvav.train.schedules import lr_scheduler, warmup_cosine, warmup_step
from uvav.train.scoring import (
    SALTS,
    Scores,
    average_frame_logits,
    average_precisions,
    evaluate_split,
    metric_name,
    oracle_available,
    score,
)
from uvav.train.self_supervised import fit_masked
from uvav.train.settings import Feed, FitSettings
from uvav.train.shared import SharedEncodings
from uvav.train.stage import (
    NonFiniteLossError,
    Stage,
    TrainingForward,
    classify_tokens,
    freeze_for_prompts,
    logits_for,
    training_forward,
)
from uvav.train.timing import JobTiming
from uvav.train.token_cache import SharedViews, TokenCache, build_caches

__all__ = [
    "SALTS", "Feed", "FitResult", "FitSettings", "JobTiming", "Loop", "NonFiniteLossError", "Scores",
    "SharedEncodings", "SharedViews", "Stage", "StageTrainee", "TokenCache", "Trainee", "TrainingForward",
    "average_frame_logits", "average_precisions", "build_caches", "classification_loss", "classify_tokens",
    "evaluate_split", "fit", "fit_masked", "freeze_for_prompts", "logits_for", "lr_scheduler", "metric_name",
    "optimizer_step", "oracle_available", "recipe_batch", "score", "training_forward", "warmup_cosine", "warmup_step",
]
