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


METHODS.register(FineTuning())
