"""Cached frozen encoder outputs give the same outputs as the full forward pass for the same draws."""

from __future__ import annotations

import contextlib

import torch

from uvav.data.base import AVSplit
from uvav.models.prompts import PromptBank
from uvav.scenarios import Noise, case_ids_for, corrupt
from uvav.train import CachedViews, EvalSets, Stage, evaluate, freeze_for_prompts, logits_for

from .test_models import tiny_model

CASES = ["complete", "noisy_audio", "noisy_visual", "noise_both"]


def make_stage(views: int, kind: str = "attention") -> Stage:
    torch.manual_seed(0)
    model = freeze_for_prompts(tiny_model(), train_head=True)
    bank = PromptBank(CASES, kind, 2, 32, 1)
    return Stage("pl", model, bank, "oracle", ["uncertain"], CASES, 1, 1e-3, 0.0, cache_views=views)


def split(n: int = 12) -> AVSplit:
    gen = torch.Generator().manual_seed(3)
    return AVSplit(torch.randn(n, 32, 32, generator=gen), torch.randn(n, 3, 16, 16, generator=gen),
                   torch.randint(0, 5, (n,), generator=gen))


def test_cached_views_match_the_uncached_forward_pass():
    stage, data, noise = make_stage(2), split(), Noise()
    cache = CachedViews.build(stage, data, noise, 2, torch.Generator().manual_seed(5), torch.device("cpu"), 5,
                              contextlib.nullcontext)
    replay = torch.Generator().manual_seed(5)  # the same draws, view by view
    for view in range(2):
        ids = case_ids_for("mixed", len(data), replay, tuple(CASES))
        audio, visual = corrupt(data.audio, data.visual, ids, noise, replay)
        assert torch.equal(cache.case_ids[view], ids)
        with torch.no_grad():
            full = logits_for(stage, audio, visual, ids, "oracle")
            prompts = stage.bank.select("oracle", len(data), ids)
            cached = stage.model.classify_encoded(cache.audio_tokens[view], cache.visual_tokens[view], prompts)
        torch.testing.assert_close(cached, full, rtol=1e-5, atol=1e-5)


def test_cached_batch_takes_one_view_per_sample():
    stage = make_stage(3)
    cache = CachedViews.build(stage, split(), Noise(), 3, torch.Generator().manual_seed(0), torch.device("cpu"), 4,
                              contextlib.nullcontext)
    index = torch.tensor([4, 1, 7])
    a, v, ids = cache.batch(index, torch.Generator().manual_seed(1))
    view = torch.randint(0, 3, (3,), generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, cache.audio_tokens[view, index]) and torch.equal(ids, cache.case_ids[view, index])


def test_evaluation_reuses_encoder_outputs_only_when_encoders_are_frozen():
    data, noise = split(), Noise()
    for kind, frozen in (("attention", True), ("input", False)):
        stage = make_stage(0, kind)
        assert stage.encoders_frozen() is frozen
        sets = EvalSets(data, noise)
        acc = evaluate(stage, sets, "noise_both", "uncertain", torch.device("cpu"), 5, contextlib.nullcontext)
        assert 0.0 <= acc <= 1.0
        assert bool(sets._encoded) is frozen
