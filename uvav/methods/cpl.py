"""``method=cpl``: input-conditioned prompt learning on the frozen model (no case label, in training or at test).

A pool of ``method.pool`` prompt sets, shaped by the ``prompt`` group like PL's (kind, length, depth), and a router:
each sample's prompts are the mean of the sets weighted by a softmax of a linear layer over a summary of its own
input (mean and std of each modality's patch embeddings, :meth:`uvav.models.classifier.AVClassifier.input_summary`).
So the prompts depend on which modality is missing or noisy, and nobody needs to know the case: the uncertain
setting by construction. The pool, the router and the head train together on mixed batches of the training cases.
Result: ``cpl_conditioned``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from uvav.cases import PromptMode
from uvav.config import require
from uvav.methods import HEAD_ONLY, METHODS, Column, FrozenBaseConfig, FrozenBaseMethod, schedule
from uvav.methods.pl import prompt_settings
from uvav.models.prompts import PromptBank

if TYPE_CHECKING:
    from uvav.train import Stage

CONDITIONED = (PromptMode.CONDITIONED.value,)


@dataclass
class CplConfig(FrozenBaseConfig):
    name: str = "cpl"
    pool: int = 4  # prompt sets the router mixes per sample


class ConditionedPrompts(FrozenBaseMethod):
    name = "cpl"
    schema = CplConfig
    order = 15
    uses_prompts = True
    eval_modes = CONDITIONED
    title = "Conditioned prompts"
    labels = {"cpl_conditioned": "FT + conditioned prompts"}
    improvements = {"Improvement (conditioned prompts - head only)": ("cpl_conditioned", HEAD_ONLY)}
    comparison = (Column("Prompts (input-conditioned)", "cpl_conditioned", "cpl", order=34),)
    summary = "frozen model with input-conditioned prompts"

    def check(self, cfg) -> None:
        super().check(cfg)
        require(cfg.prompt.kind != "none", "prompt", cfg.prompt.kind,
                "method=cpl needs prompts: prompt=input, attention or both")
        require(cfg.method.pool >= 1, "method.pool", cfg.method.pool, "a positive integer")
        require(cfg.method.cache_features != "on", "method.cache_features", "on",
                "auto or off: conditioned prompts are mixed from the input, so encoder outputs are not cached")

    def bank(self, cfg) -> PromptBank:
        return PromptBank.from_config(cfg, pool=cfg.method.pool)

    def build_stage(self, cfg, base, device) -> Stage:
        from uvav.train import Stage

        epochs, lr = schedule(cfg)
        return Stage.prompted(self.name, base.to(device), self.bank(cfg).to(device), list(cfg.scenario.train_cases),
                              train_mode=PromptMode.CONDITIONED.value, epochs=epochs, lr=lr,
                              weight_decay=cfg.trainer.weight_decay, eval_modes=self.eval_modes)

    def settings(self, method: Any, prompt: Any) -> str:
        return f"{prompt_settings(prompt)} pool={method.get('pool')}"

    def describe(self, key: str, case: str | None = None) -> str:
        return "cpl_conditioned: each sample a mixture of the prompt sets, weighted from its own input"


METHODS.register(ConditionedPrompts())
