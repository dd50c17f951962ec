"""The settings each registered method gets from an experiment (default ``paper_us8k``), composed as a job would be:

    python experiments/recipe_table.py [--experiment paper_us8k] [override ...]

One markdown row per method: its FT model's stage (epochs, lr, head lr, optimiser and betas, schedule, mixup,
label smoothing, weight averaging) and its own stage (epochs, lr); plugins (``$UVAV_PLUGINS``) included.
"""

from __future__ import annotations

import argparse

from hydra import compose, initialize_config_dir

from uvav.checks import register_configs
from uvav.config import config_dir
from uvav.methods import METHODS, ft_schedule, schedule
from uvav.recipe import Recipe

COLUMNS = ["method", "FT epochs", "FT lr", "head lr", "optimiser (betas)", "schedule", "mixup", "label smoothing",
           "weight averaging", "own stage: epochs", "own stage: lr"]


def describe_schedule(recipe: Recipe, warmup_epochs: float) -> str:
    warmup = f"{warmup_epochs:g}-epoch warm-up, then " if warmup_epochs else ""
    if recipe.lr_schedule == "step":
        return (f"{warmup}x{recipe.lr_step_decay:g} every {recipe.lr_step_every} epoch(s) after "
                f"{recipe.lr_step_start}")
    return f"{warmup}cosine"


def row(name: str, overrides: list[str]) -> list[str]:
    """The table row of method ``name`` composed with ``overrides``."""
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=[f"method={name}", *overrides])
    method = METHODS.get(name)
    recipe, trainer = Recipe.of(cfg.trainer), cfg.trainer
    ft_epochs, ft_lr = ft_schedule(cfg)
    wa = f"epochs {recipe.wa_start}..{recipe.wa_end}" if recipe.averages else "no (best epoch)"
    own = [f"{v:g}" for v in schedule(cfg)] if method.frozen_base or not method.classifies else ["= FT"] * 2
    ft = [str(ft_epochs), f"{ft_lr:g}", f"{ft_lr * trainer.head_lr_scale:g}",
          f"{recipe.optimizer} {tuple(recipe.betas)}", describe_schedule(recipe, trainer.warmup_epochs),
          f"{recipe.mixup:g}", f"{recipe.label_smoothing:g}", wa]
    return [name, *(ft if method.classifies else ["- (no FT model)"] + ["-"] * (len(ft) - 1)), *own]


def table(overrides: list[str]) -> str:
    rows = [COLUMNS, ["---"] * len(COLUMNS), *(row(m.name, overrides) for m in METHODS)]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="paper_us8k", help="an experiment config (conf/experiment/)")
    parser.add_argument("overrides", nargs="*", help="further overrides (key=value)")
    args = parser.parse_args()
    register_configs()
    print(table([f"experiment={args.experiment}", *args.overrides]))


if __name__ == "__main__":
    main()
