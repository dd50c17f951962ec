"""The names every layer shares: the four training cases, ``mixed``, the prompt modes, and how a stage's prompt
mode names its result.

A *case* says which modalities a sample has corrupted (:data:`CASE_EFFECTS`); ``mixed`` is evaluation only
(each sample gets one of the four at random). A *prompt mode* says how a stage picks prompts: ``none`` (no
prompts), ``oracle`` (each sample the set of its own case), ``uncertain`` (all sets, the case unknown) or
``conditioned`` (a mixture of the sets weighted from the sample's own input, the case unknown). A result
(``metrics.json``'s ``accuracy`` keys, the tables' columns) is named by :func:`result_key`; what it holds is
:data:`ACCURACY` (single-label data) or :data:`MAP` (multi-label data, ``metrics.json``'s ``metric``).
"""

from __future__ import annotations

from enum import Enum


class Case(str, Enum):
    """A training or evaluation case. The value is the name used in configs, metrics and tables."""

    COMPLETE = "complete"
    NOISY_AUDIO = "noisy_audio"  # the paper's "vision only"
    NOISY_VISUAL = "noisy_visual"  # the paper's "audio only"
    NOISE_BOTH = "noise_both"
    MIXED = "mixed"  # evaluation only: each sample one of the four, drawn per sample


class PromptMode(str, Enum):
    """How a stage picks its prompts (see :mod:`uvav.models.prompts`)."""

    NONE = "none"
    ORACLE = "oracle"
    UNCERTAIN = "uncertain"
    CONDITIONED = "conditioned"  # each sample a mixture of the sets, weighted from its own input


CASES: tuple[str, ...] = tuple(c.value for c in Case if c is not Case.MIXED)  # training cases, in case-id order
EVAL_CASES: tuple[str, ...] = (*CASES, Case.MIXED.value)
# case -> (audio corrupted, visual corrupted)
CASE_EFFECTS: dict[str, tuple[bool, bool]] = {
    Case.COMPLETE.value: (False, False),
    Case.NOISY_AUDIO.value: (True, False),
    Case.NOISY_VISUAL.value: (False, True),
    Case.NOISE_BOTH.value: (True, True),
}
CASE_INDEX: dict[str, int] = {name: i for i, name in enumerate(CASES)}
CASE_LABELS: dict[str, str] = {  # row labels of the paper's tables
    Case.COMPLETE.value: "Complete",
    Case.NOISY_AUDIO.value: "Noisy audio (vision only)",
    Case.NOISY_VISUAL.value: "Noisy visual (audio only)",
    Case.NOISE_BOTH.value: "Noise to both",
    Case.MIXED.value: "Mixed (uncertain)",
}
ACCURACY, MAP = "accuracy", "mAP"  # the score of single-label and of multi-label data (metrics.json's metric)
NO_PROMPTS: tuple[str, ...] = (PromptMode.NONE.value,)  # the scores of a stage without prompts
PROMPTED_MODES: tuple[str, ...] = (PromptMode.UNCERTAIN.value, PromptMode.ORACLE.value)  # with prompts; first selects


def result_key(stage: str, mode: str) -> str:
    """The name of a stage's result in one prompt mode: the stage's name without prompts (``ft``, ``head_only``,
    ``lora``), ``<stage>_<mode>`` with them (``pl_uncertain``, ``pl_oracle``)."""
    return stage if mode == PromptMode.NONE.value else f"{stage}_{mode}"
