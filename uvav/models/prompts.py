"""Per-scenario prompt banks and how a batch picks its prompts.

A bank holds, for every training case, ``length`` learnable tokens per place:
- input level: ``input_audio`` and ``input_visual``, concatenated to each modality's tokens before its encoder;
- attention level: ``key`` and ``value`` tokens for each fusion layer and direction.

Selection:
- ``oracle``: each sample gets the set of its own case (``case_ids``), as when the case is known;
- ``uncertain``: every sample gets all sets concatenated, so nobody needs to know the case.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from uvav.cases import CASES
from uvav.models.fusion import DIRECTIONS


@dataclass
class Prompts:
    """The prompt tokens of one batch, each ``[B, P, D]``; ``None`` where a level is unused."""

    input_audio: torch.Tensor | None = None
    input_visual: torch.Tensor | None = None
    attention: list[dict[str, tuple[torch.Tensor, torch.Tensor]]] = field(default_factory=list)

    def fusion_layer(self, i: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]] | None:
        return self.attention[i] if self.attention else None


class PromptBank(nn.Module):
    """Learnable prompt sets, one per training case. ``kind`` is input, attention or both."""

    def __init__(
        self, cases: list[str], kind: str, length: int, embed_dim: int, fusion_depth: int
    ) -> None:
        super().__init__()
        if kind not in ("input", "attention", "both"):
            raise ValueError(f"prompt kind must be input, attention or both, got {kind!r}")
        self.cases = list(cases)
        self.kind = kind
        self.length = length

        def tokens() -> nn.Parameter:  # [S, L, D]: one set per case
            return nn.Parameter(nn.init.trunc_normal_(torch.empty(len(cases), length, embed_dim), std=0.02))

        self.input_audio = tokens() if kind in ("input", "both") else None
        self.input_visual = tokens() if kind in ("input", "both") else None
        self.attention = nn.ModuleList()
        if kind in ("attention", "both"):
            for _ in range(fusion_depth):
                layer = nn.ParameterDict()
                for direction in DIRECTIONS:
                    layer[f"{direction}_key"] = tokens()
                    layer[f"{direction}_value"] = tokens()
                self.attention.append(layer)

    @classmethod
    def from_config(cls, cfg) -> PromptBank:
        """The bank of a PL job: one set per training case (``scenario.train_cases``), shaped by ``prompt`` and
        ``backbone``."""
        return cls(list(cfg.scenario.train_cases), cfg.prompt.kind, cfg.prompt.length, cfg.backbone.embed_dim,
                   cfg.backbone.fusion_depth)

    def set_index(self, case_ids: torch.Tensor) -> torch.Tensor:
        """Map global case ids (index into ``CASES``) to rows of this bank; error for an untrained case."""
        lookup = torch.full((len(CASES),), -1, dtype=torch.long)
        for row, case in enumerate(self.cases):
            lookup[CASES.index(case)] = row
        rows = lookup[case_ids.cpu()]
        if (rows < 0).any():
            missing = sorted({CASES[i] for i in case_ids[rows < 0].tolist()})
            raise ValueError(f"oracle prompts requested for untrained case(s) {missing}; trained: {self.cases}")
        return rows

    def _pick(self, bank: torch.Tensor, mode: str, rows: torch.Tensor | None, batch: int) -> torch.Tensor:
        if mode == "uncertain":
            return bank.reshape(1, -1, bank.shape[-1]).expand(batch, -1, -1)
        return bank[rows.to(bank.device)]

    def select(self, mode: str, batch: int, case_ids: torch.Tensor | None = None) -> Prompts:
        """Prompts for a batch: ``uncertain`` (all sets) or ``oracle`` (each sample's own case)."""
        if mode not in ("oracle", "uncertain"):
            raise ValueError(f"prompt mode must be oracle or uncertain, got {mode!r}")
        rows = None
        if mode == "oracle":
            if case_ids is None:
                raise ValueError("oracle prompts need the case of every sample (case_ids)")
            rows = self.set_index(case_ids)
        out = Prompts()
        if self.input_audio is not None:
            out.input_audio = self._pick(self.input_audio, mode, rows, batch)
            out.input_visual = self._pick(self.input_visual, mode, rows, batch)
        for layer in self.attention:
            out.attention.append({
                d: (self._pick(layer[f"{d}_key"], mode, rows, batch),
                    self._pick(layer[f"{d}_value"], mode, rows, batch))
                for d in DIRECTIONS
            })
        return out

    def orthogonality_penalty(self) -> torch.Tensor:
        """Mean squared cosine similarity between the prompt sets of different cases, over every place
        (Jang et al. 2024's idea of keeping the sets distinct; 0 when there is one set)."""
        penalties = []
        for tokens in self.parameters():  # each [S, L, D]
            if tokens.shape[0] < 2:
                continue
            flat = torch.nn.functional.normalize(tokens.flatten(1), dim=1)
            gram = flat @ flat.T
            off_diagonal = gram - torch.diag(torch.diagonal(gram))
            penalties.append(off_diagonal.pow(2).sum() / (tokens.shape[0] * (tokens.shape[0] - 1)))
        return torch.stack(penalties).mean() if penalties else torch.zeros(())
