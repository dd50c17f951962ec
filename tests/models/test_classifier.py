"""Shapes with and without each prompt kind; which parameters each method trains."""

from __future__ import annotations

import pytest
import torch

from uvav.models.backbone import sincos_2d
from uvav.models.classifier import AVClassifier
from uvav.models.prompts import PromptBank
from uvav.train import freeze_for_prompts

from ..conftest import tiny_model

CASES = ["complete", "noisy_audio", "noisy_visual", "noise_both"]


def batch(n: int = 3):
    return torch.randn(n, 32, 32), torch.randn(n, 3, 16, 16)


def test_token_counts_of_cavmae_base_sizes():
    with torch.device("meta"):
        model = AVClassifier(10, target_length=1024, num_mel_bins=128, image_size=224, embed_dim=768,
                             num_heads=12, depth=11, shared_depth=1, patch_size=16)
    assert model.audio.num_tokens == 512 and model.visual.num_tokens == 196
    assert len(model.audio.blocks) == 11 and len(model.visual.blocks) == 11 and len(model.shared) == 1
    assert model.audio.grid == (8, 64)


@pytest.mark.parametrize("kind", [None, "input", "attention", "both"])
@pytest.mark.parametrize("mode", ["oracle", "uncertain"])
def test_forward_shapes_with_each_prompt_kind(kind, mode):
    model = tiny_model(fusion_depth=2)
    audio, visual = batch()
    if kind is None:
        assert model(audio, visual).shape == (3, 5)
        return
    bank = PromptBank(CASES, kind, length=3, embed_dim=32, fusion_depth=2)
    prompts = bank.select(mode, 3, torch.tensor([0, 1, 3]))
    assert model(audio, visual, prompts).shape == (3, 5)
    expected = 3 * (len(CASES) if mode == "uncertain" else 1)
    if kind in ("input", "both"):
        assert [p.shape for p in prompts.input_audio] == [(3, expected, 32)]
    if kind in ("attention", "both"):
        assert len(prompts.attention) == 2
        key, value = prompts.attention[1]["audio_from_visual"]
        assert key.shape == value.shape == (3, expected, 32)


def test_prompts_change_the_output_and_oracle_picks_own_set():
    model = tiny_model().eval()
    bank = PromptBank(CASES, "both", length=2, embed_dim=32, fusion_depth=1)
    audio, visual = batch(2)
    plain = model(audio, visual)
    with torch.no_grad():
        prompted = model(audio, visual, bank.select("oracle", 2, torch.tensor([0, 0])))
        assert not torch.allclose(plain, prompted)
        # sample 1 with case 2 must not depend on the prompt set of case 0
        before = model(audio, visual, bank.select("oracle", 2, torch.tensor([0, 2])))[1]
        bank.input_audio[0].add_(1.0)
        bank.attention[0]["audio_from_visual_key"][0].add_(1.0)
        after = model(audio, visual, bank.select("oracle", 2, torch.tensor([0, 2])))[1]
    assert torch.allclose(before, after)


def test_oracle_for_untrained_case_is_an_error():
    bank = PromptBank(["complete"], "attention", 2, 32, 1, case_names=CASES)
    with pytest.raises(ValueError, match="untrained"):
        bank.select("oracle", 1, torch.tensor([1]))


def test_pl_freezes_everything_but_head():
    frozen = freeze_for_prompts(tiny_model(), train_head=True)
    trainable = {n for n, p in frozen.named_parameters() if p.requires_grad}
    assert trainable == {"head.0.weight", "head.0.bias", "head.1.weight", "head.1.bias"}
    assert not any(p.requires_grad for p in freeze_for_prompts(tiny_model(), False).parameters())


def test_sincos_is_fixed_and_distinct():
    pos = sincos_2d(32, 2, 4)
    assert pos.shape == (1, 8, 32)
    assert torch.unique(pos[0], dim=0).shape[0] == 8


def test_orthogonality_penalty_is_zero_for_orthogonal_sets_and_positive_for_equal_ones():
    bank = PromptBank(["complete", "noisy_audio"], "input", length=1, embed_dim=4, fusion_depth=1)
    with torch.no_grad():
        for tokens in bank.parameters():
            tokens.copy_(torch.tensor([[[1.0, 0, 0, 0]], [[0, 1.0, 0, 0]]]))
    assert bank.orthogonality_penalty().item() == 0.0
    with torch.no_grad():
        for tokens in bank.parameters():
            tokens.copy_(torch.tensor([[[1.0, 2, 0, 0]], [[1.0, 2, 0, 0]]]))
    assert abs(bank.orthogonality_penalty().item() - 1.0) < 1e-6
