"""``method=head_only``: the head-only baseline as a run of its own: the frozen FT model with only its head
retrained on mixed batches of the training cases (no prompts, no new layers).

Every frozen-base job trains this stage beside its method (``method.head_only_baseline``); this method trains it
alone, so that the baseline has a saved model of its own that :func:`uvav.load_run`, ``uvav.evaluate`` and
``uvav.robustness`` can score under any corruption or missing rate. Its stage is the baseline's stage, with the
baseline's seed (``seed + 1``) and the job's shared training views: on the same FT model it reproduces the
``head_only`` numbers of a ``method=pl`` job exactly. Result key ``head_only`` (the tables' "Head only" column).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from uvav.config import require
from uvav.methods import (
    HEAD_ONLY,
    HEAD_ONLY_LABEL,
    METHODS,
    Column,
    FrozenBaseConfig,
    FrozenBaseMethod,
    cache_views,
    schedule,
)

if TYPE_CHECKING:
    from uvav.train import Stage


@dataclass
class HeadOnlyConfig(FrozenBaseConfig):
    name: str = HEAD_ONLY
    head_only_baseline: bool = False  # this method is the baseline: no second copy of it


class HeadOnly(FrozenBaseMethod):
    name = HEAD_ONLY
    schema = HeadOnlyConfig
    order = 5
    title = HEAD_ONLY_LABEL
    summary = "the frozen FT model with only its head retrained, no prompts"
    variant_order = 1
    stage_seed_offset = 1  # the baseline's seed inside every frozen-base job

    @property
    def labels(self) -> dict[str, str]:
        return {HEAD_ONLY: HEAD_ONLY_LABEL}  # the column every frozen-base job's baseline fills

    @property
    def improvements(self) -> dict[str, tuple[str, str]]:
        return {}  # head only has no improvement column of its own (tables compare methods against it)

    @property
    def comparison(self) -> tuple[Column, ...]:
        return ()  # the comparison shows head only from every frozen-base job

    def check(self, cfg) -> None:
        super().check(cfg)
        require(cfg.method.train_head, "method.train_head", cfg.method.train_head, "true with method=head_only")
        require(not cfg.method.head_only_baseline, "method.head_only_baseline", cfg.method.head_only_baseline,
                "false with method=head_only (the method is the baseline)")

    def shares_encodings(self, cfg) -> bool:
        """Only the head trains, after the frozen fusion."""
        return True

    def build_stage(self, cfg, base, device) -> Stage:
        from uvav.train import Stage

        epochs, lr = schedule(cfg)
        return Stage.frozen(HEAD_ONLY, base, list(cfg.scenario.train_cases), epochs=epochs, lr=lr,
                            weight_decay=cfg.trainer.weight_decay, cache_views=cache_views(cfg),
                            shares_encodings=True, shares_features=True)


METHODS.register(HeadOnly())
