"""``method=ft``: fine-tuning, every weight trains (no prompts). The pipeline trains this model first for every
method, and the frozen-base methods start from it (:func:`uvav.pipeline.ensure_ft_model`)."""

from __future__ import annotations

from dataclasses import dataclass

from uvav.config import MethodConfig
from uvav.methods import FT, METHODS, Method


@dataclass
class FtConfig(MethodConfig):
    name: str = FT


class FineTuning(Method):
    name = FT
    schema = FtConfig
    order = 0
    title = "FT"
    labels = {FT: "FT"}
    improvements = {}
    comparison_order = 0
    summary = "fine-tuned model, no prompts"
    table_note = "FT: the fine-tuned model (in a PL, LoRA or adapter group: those jobs' own frozen base)."
    comparison_note = ("FT, LoRA, Adapter, head only and prompts share each seed's frozen FT model; every method "
                       "but FT trains on all four cases.")
    variant_order = 0


METHODS.register(FineTuning())
