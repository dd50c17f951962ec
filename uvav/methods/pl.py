"""``method=pl``: prompt learning on the frozen FT model, one prompt set per training case (the paper's method).

Training: ``method.prompt_training=per_scenario`` (the paper) gives each sample the prompt set of its own case
(oracle); ``joint`` trains all sets together as they are used at test time (uncertain). Results: ``pl_uncertain``
(all sets concatenated: the case is unknown) and ``pl_oracle`` (each sample its own case's set).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from uvav.cases import PROMPTED_MODES, PromptMode
from uvav.config import PromptConfig, require
from uvav.methods import (
    FT,
    HEAD_ONLY,
    METHODS,
    Column,
    FrozenBaseConfig,
    FrozenBaseMethod,
    cache_views,
    prompt_bank,
    schedule,
)

if TYPE_CHECKING:
    from uvav.models.prompts import PromptBank
    from uvav.train import Stage


@dataclass
class PlConfig(FrozenBaseConfig):
    name: str = "pl"
    prompt_training: str = "per_scenario"  # per_scenario (paper: each case its own set) | joint (all, as used)
    orthogonality: float = 0.0  # weight of a loss keeping the case prompt sets apart (0 = off)


class PromptLearning(FrozenBaseMethod):
    name = "pl"
    schema = PlConfig
    order = 10
    uses_prompts = True
    eval_modes = PROMPTED_MODES
    labels = {"pl_uncertain": "FT + PL (uncertain)", "pl_oracle": "FT + PL (oracle)"}
    title = "PL"
    improvements = {"Improvement (PL unc. - FT)": ("pl_uncertain", FT),
                    "Improvement over head only": ("pl_uncertain", HEAD_ONLY)}
    per_scenario = {"prompt_training": "per_scenario"}
    comparison = (
        Column("Head only", HEAD_ONLY, HEAD_ONLY, order=30, where=per_scenario),
        Column("Prompts (oracle)", "pl_oracle", "pl", order=31, where=per_scenario),
        Column("Prompts (uncertain, per-scenario training)", "pl_uncertain", "pl", order=32, where=per_scenario),
        Column("Prompts (uncertain, trained as used)", "pl_uncertain", "pl", order=33,
               where={"prompt_training": "joint"}),
    )
    summary = "frozen FT model with prompts"
    table_note = ("FT + PL (uncertain): all prompt sets together, as when the case is unknown; (oracle): each sample "
                  "with its own case's prompt set.")
    comparison_note = ("'Uncertain' = all prompt sets concatenated, as when the case is unknown; 'trained as used' "
                       "= method.prompt_training=joint.")

    def check(self, cfg) -> None:
        super().check(cfg)
        require(cfg.prompt.kind != "none", "prompt", cfg.prompt.kind,
                "method=pl needs prompts: prompt=input, attention or both (its head-only baseline is "
                "method.head_only_baseline=true)")
        require(cfg.method.prompt_training in ("per_scenario", "joint"), "method.prompt_training",
                cfg.method.prompt_training, "per_scenario or joint")
        if cfg.method.cache_features == "on":
            require(self.shares_encodings(cfg), "method.cache_features", "on",
                    "'on' only with prompt=attention (input prompts change the encoders' outputs); use auto")

    def bank(self, cfg) -> PromptBank:
        return prompt_bank(cfg)

    def shares_encodings(self, cfg) -> bool:
        """Attention-level prompts act after the encoders; input-level (and deep) prompts change their outputs."""
        return cfg.prompt.kind == "attention"

    def build_stage(self, cfg, base, device) -> Stage:
        from uvav.train import Stage

        bank = self.bank(cfg).to(device)
        epochs, lr = schedule(cfg)
        per_scenario = cfg.method.prompt_training == "per_scenario"
        train_mode = (PromptMode.ORACLE if per_scenario else PromptMode.UNCERTAIN).value
        return Stage.prompted(self.name, base.to(device), bank, list(cfg.scenario.train_cases), train_mode=train_mode,
                              epochs=epochs, lr=lr, weight_decay=cfg.trainer.weight_decay, cache_views=cache_views(cfg),
                              orthogonality=cfg.method.orthogonality, eval_modes=self.eval_modes,
                              shares_encodings=self.shares_encodings(cfg))

    def describe(self, key: str, case: str | None = None) -> str:
        if key == "pl_uncertain":
            return "pl_uncertain: all prompt sets concatenated (the case is unknown)"
        return f"pl_oracle: the prompt set of case {case}" if case else "pl_oracle: each case its own prompt set"

    def settings(self, method: Any, prompt: Any) -> str:
        joint = ", trained as used" if method.get("prompt_training") == "joint" else ""
        return prompt_settings(prompt) + joint

    def variant(self, method: Any) -> str:
        return "_joint" if method.get("prompt_training") == "joint" else ""


def prompt_settings(prompt: Any) -> str:
    """The prompt group's settings in a few words: ``input L=4 depth=2``."""
    words = [str(prompt.get("kind")), f"L={prompt.get('length')}"]
    words += [f"{k}={prompt.get(k)}" for k in ("depth", "shared_depth")
              if prompt.get(k, getattr(PromptConfig, k)) != getattr(PromptConfig, k)]
    return " ".join(words)


METHODS.register(PromptLearning())
