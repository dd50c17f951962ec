"""Prompt banks and how a batch picks its prompts.

A bank holds ``S`` sets of ``length`` learnable tokens per place:
- input level (``prompt.kind`` input or both): ``input_audio`` / ``input_visual``, concatenated to each
  modality's tokens before its first block; with ``prompt.depth`` d > 1 also ``deep_audio`` / ``deep_visual``
  for blocks 1..d-1, which replace the prompt tokens' outputs of the block before (deep prompts, as VPT-deep and
  Missing-Aware Prompts); with ``prompt.shared_depth`` n, ``shared`` sets for the first n shared blocks;
- attention level (attention or both): ``key`` and ``value`` tokens for each fusion layer and direction.

The sets are either one per training case (``method=pl``) or a pool mixed per sample (``method=cpl``).
Selection:
- ``oracle``: each sample gets the set of its own case (``case_ids``), as when the case is known;
- ``uncertain``: every sample gets all sets concatenated, so nobody needs to know the case;
- ``conditioned``: each sample gets a weighted mean of the sets, the weights a softmax of a linear ``router`` over
  a summary of the sample's own input (:meth:`uvav.models.classifier.AVClassifier.input_summary`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from uvav.models.fusion import DIRECTIONS


@dataclass
class Prompts:
    """The prompt tokens of one batch, each ``[B, P, D]``: per encoder block from block 0 (``input_*``), per shared
    block from the first (``shared``), per fusion layer and direction (``attention``); empty where unused."""

    input_audio: list[torch.Tensor] = field(default_factory=list)
    input_visual: list[torch.Tensor] = field(default_factory=list)
    shared: list[torch.Tensor] = field(default_factory=list)
    attention: list[dict[str, tuple[torch.Tensor, torch.Tensor]]] = field(default_factory=list)

    def fusion_layer(self, i: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]] | None:
        return self.attention[i] if self.attention else None


class PromptBank(nn.Module):
    """Learnable prompt sets named ``cases`` (training cases, or pool entries). ``kind``: input, attention or both;
    ``depth``: encoder blocks with input-level prompts of their own; ``shared_depth``: shared blocks with prompts;
    ``router_dim`` > 0: a router over input summaries of that width (conditioned selection). ``case_names``: what
    the case ids of oracle selection index (``case_names[case_ids[i]]``), by default the bank's own ``cases``."""

    def __init__(
        self, cases: Sequence[str], kind: str, length: int, embed_dim: int, fusion_depth: int, depth: int = 1,
        shared_depth: int = 0, router_dim: int = 0, case_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        if kind not in ("input", "attention", "both"):
            raise ValueError(f"prompt kind must be input, attention or both, got {kind!r}")
        input_level = kind in ("input", "both")
        if (depth > 1 or shared_depth) and not input_level:
            raise ValueError("deep and shared-block prompts are input-level: prompt kind input or both")
        self.cases = list(cases)
        self.case_names = list(case_names if case_names is not None else cases)
        self.kind = kind
        self.length = length

        def tokens() -> nn.Parameter:  # [S, L, D]: one set per case
            return nn.Parameter(nn.init.trunc_normal_(torch.empty(len(cases), length, embed_dim), std=0.02))

        self.input_audio = tokens() if input_level else None  # block 0 (the input level)
        self.input_visual = tokens() if input_level else None
        self.deep_audio = nn.ParameterList(tokens() for _ in range(depth - 1) if input_level)  # blocks 1..depth-1
        self.deep_visual = nn.ParameterList(tokens() for _ in range(depth - 1) if input_level)
        self.shared = nn.ParameterList(tokens() for _ in range(shared_depth))
        self.attention = nn.ModuleList()
        if kind in ("attention", "both"):
            for _ in range(fusion_depth):
                layer = nn.ParameterDict()
                for direction in DIRECTIONS:
                    layer[f"{direction}_key"] = tokens()
                    layer[f"{direction}_value"] = tokens()
                self.attention.append(layer)
        self.router = (nn.Sequential(nn.LayerNorm(router_dim), nn.Linear(router_dim, len(cases)))
                       if router_dim else None)

    def places(self) -> Iterator[torch.Tensor]:
        """Every place's sets ``[S, L, D]``."""
        for tokens in (self.input_audio, self.input_visual, *self.deep_audio, *self.deep_visual, *self.shared):
            if tokens is not None:
                yield tokens
        for layer in self.attention:
            yield from layer.values()

    def set_index(self, case_ids: torch.Tensor) -> torch.Tensor:
        """Map case ids (indices into ``case_names``) to rows of this bank; error for an untrained case."""
        lookup = torch.full((len(self.case_names),), -1, dtype=torch.long)
        for row, case in enumerate(self.cases):
            if case in self.case_names:
                lookup[self.case_names.index(case)] = row
        rows = lookup[case_ids.cpu()]
        if (rows < 0).any():
            missing = sorted({self.case_names[i] for i in case_ids[rows < 0].tolist()})
            raise ValueError(f"oracle prompts requested for untrained case(s) {missing}; trained: {self.cases}")
        return rows

    def weights(self, query: torch.Tensor) -> torch.Tensor:
        """Each sample's weights over the sets ``[B, S]`` from its input summary ``query`` (conditioned mode)."""
        if self.router is None:
            raise ValueError("conditioned prompts need a bank with a router (method=cpl)")
        return self.router(query.float()).softmax(dim=-1)

    def _picker(self, mode: str, batch: int, case_ids: torch.Tensor | None, query: torch.Tensor | None
                ) -> Callable[[torch.Tensor], torch.Tensor]:
        if mode == "uncertain":
            return lambda t: t.reshape(1, -1, t.shape[-1]).expand(batch, -1, -1)
        if mode == "oracle":
            if case_ids is None:
                raise ValueError("oracle prompts need the case of every sample (case_ids)")
            rows = self.set_index(case_ids)
            return lambda t: t[rows.to(t.device)]
        if mode == "conditioned":
            if query is None:
                raise ValueError("conditioned prompts need the input summary of every sample (query)")
            weights = self.weights(query)
            return lambda t: torch.einsum("bs,sld->bld", weights.to(t.dtype), t)
        raise ValueError(f"prompt mode must be oracle, uncertain or conditioned, got {mode!r}")

    def select(self, mode: str, batch: int, case_ids: torch.Tensor | None = None,
               query: torch.Tensor | None = None) -> Prompts:
        """Prompts for a batch: ``uncertain`` (all sets), ``oracle`` (each sample its own case's) or ``conditioned``
        (each sample a mixture weighted from its ``query``)."""
        pick = self._picker(mode, batch, case_ids, query)
        out = Prompts(shared=[pick(t) for t in self.shared])
        if self.input_audio is not None:
            out.input_audio = [pick(t) for t in (self.input_audio, *self.deep_audio)]
            out.input_visual = [pick(t) for t in (self.input_visual, *self.deep_visual)]
        for layer in self.attention:
            out.attention.append({d: (pick(layer[f"{d}_key"]), pick(layer[f"{d}_value"])) for d in DIRECTIONS})
        return out

    def orthogonality_penalty(self) -> torch.Tensor:
        """Mean squared cosine similarity between the prompt sets of different cases, over every place
        (Jang et al. 2024's idea of keeping the sets distinct; 0 when there is one set)."""
        penalties = []
        for tokens in self.places():  # each [S, L, D]
            if tokens.shape[0] < 2:
                continue
            flat = torch.nn.functional.normalize(tokens.flatten(1), dim=1)
            gram = flat @ flat.T
            off_diagonal = gram - torch.diag(torch.diagonal(gram))
            penalties.append(off_diagonal.pow(2).sum() / (tokens.shape[0] * (tokens.shape[0] - 1)))
        return torch.stack(penalties).mean() if penalties else torch.zeros(())
