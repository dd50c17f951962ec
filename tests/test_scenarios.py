"""Each case corrupts exactly what it says; evaluation draws are deterministic."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from uvav.cases import CASE_EFFECTS, CASES
from uvav.config import NoiseConfig as Noise
from uvav.scenarios import (
    CASE_INDEX,
    corrupt_audio,
    corrupt_sample,
    corrupt_visual,
    eval_sample,
)


def corrupt(audio, visual, case: str, noise: Noise, gen: torch.Generator):
    """Every sample of a batch under ``case``, drawing from one generator in order."""
    pairs = [corrupt_sample(a, v, CASE_INDEX[case], noise, gen) for a, v in zip(audio, visual, strict=True)]
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


def data(n: int = 16):
    gen = torch.Generator().manual_seed(0)
    return torch.randn(n, 64, 32, generator=gen), torch.randn(n, 3, 32, 32, generator=gen)


@pytest.mark.parametrize("case", CASES)
def test_case_corrupts_exactly_its_modalities(case):
    audio, visual = data()
    gen = torch.Generator().manual_seed(1)
    out_a, out_v = corrupt(audio, visual, case, Noise(), gen)
    noisy_a, noisy_v = CASE_EFFECTS[case]
    # time_roll by 0 or freq_mask of width 0 can leave a sample unchanged: compare the whole batch
    assert (not torch.equal(out_a, audio)) == noisy_a
    assert (not torch.equal(out_v, visual)) == noisy_v
    if not noisy_a:
        assert torch.equal(out_a, audio)
    if not noisy_v:
        assert torch.equal(out_v, visual)


def test_inputs_are_not_modified():
    audio, visual = data()
    a0, v0 = audio.clone(), visual.clone()
    gen = torch.Generator().manual_seed(0)
    corrupt(audio, visual, "noise_both", Noise(), gen)
    assert torch.equal(audio, a0) and torch.equal(visual, v0)


def test_each_noise_kind():
    audio, visual = data(1)
    gen = torch.Generator().manual_seed(0)
    noise = Noise()
    assert torch.equal(corrupt_audio(audio[0], "missing", noise, False, gen), torch.zeros(64, 32))
    noisy = corrupt_audio(audio[0], "gaussian", noise, False, gen)
    assert 8 < (noisy - audio[0]).std() < 12  # std 10 alone
    assert (corrupt_audio(audio[0], "gaussian", noise, True, gen) - audio[0]).std() < 1.5  # std 1 for both
    rolled = corrupt_audio(audio[0], "time_roll", dataclasses.replace(noise, max_time_roll=5), False, gen)
    assert any(torch.equal(rolled, torch.roll(audio[0], s, 0)) for s in range(-5, 6))
    masked = corrupt_audio(audio[0], "freq_mask", dataclasses.replace(noise, max_freq_mask=32), False, gen)
    zero_cols = (masked == 0).all(dim=0)
    assert torch.equal(masked[:, ~zero_cols], audio[0][:, ~zero_cols])
    assert torch.equal(corrupt_visual(visual[0], "black", noise, gen), torch.zeros(3, 32, 32))
    blurred = corrupt_visual(visual[0], "blur", noise, gen)
    assert blurred.std() < visual[0].std() * 0.7  # smoothing white noise lowers its variance
    pixelated = corrupt_visual(visual[0], "pixelate", noise, gen)
    assert torch.unique(pixelated[0]).numel() <= 4  # 32 px * 0.05 -> 2x2 blocks
    assert (corrupt_visual(visual[0], "gaussian", noise, gen) - visual[0]).std() > 4


def test_missing_is_expressible_and_severity_zero_is_identity():
    audio, visual = data()
    gen = torch.Generator().manual_seed(0)
    out_a, _ = corrupt(audio, visual, "noisy_audio", Noise(audio=("missing",)), gen)
    assert torch.count_nonzero(out_a) == 0
    out_a, out_v = corrupt(audio, visual, "noise_both", Noise(severity=0.0), gen)
    assert torch.equal(out_a, audio) and torch.equal(out_v, visual)


def test_evaluation_corruption_is_a_function_of_seed_case_and_index():
    audio, visual = data(64)
    noise = Noise()
    first = [eval_sample(audio[i], visual[i], "mixed", noise, 0, i) for i in range(64)]
    again = [eval_sample(audio[i], visual[i], "mixed", noise, 0, i) for i in reversed(range(64))][::-1]
    assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) and x[2] == y[2]
               for x, y in zip(first, again, strict=True))
    assert len({c for _, _, c in first}) == 4  # mixed gives every case
    other_seed = eval_sample(audio[3], visual[3], "noise_both", Noise(eval_seed=7), 0, 3)
    same_seed = eval_sample(audio[3], visual[3], "noise_both", noise, 0, 3)
    other_salt = eval_sample(audio[3], visual[3], "noise_both", noise, 1, 3)
    assert not torch.equal(other_seed[1], same_seed[1]) and not torch.equal(other_salt[1], same_seed[1])


def test_training_augmentation_masks_and_shifts_without_touching_inputs():
    from uvav.scenarios import augment_sample

    audio = torch.ones(64, 32)
    visual = torch.arange(3 * 8 * 8, dtype=torch.float).view(3, 8, 8)
    a0, v0 = audio.clone(), visual.clone()
    gen = torch.Generator().manual_seed(0)
    for _ in range(4):
        out_a, out_v = augment_sample(audio, visual, 8, 16, 2, gen)
        assert torch.equal(audio, a0) and torch.equal(visual, v0)
        assert (out_a == 0).sum() <= 8 * 64 + 16 * 32
        # the image is its original moved by at most 2 px, zero filled
        assert any(
            torch.equal(out_v[:, max(dy, 0):8 + min(dy, 0), max(dx, 0):8 + min(dx, 0)],
                        visual[:, max(-dy, 0):8 + min(-dy, 0), max(-dx, 0):8 + min(-dx, 0)])
            for dy in range(-2, 3) for dx in range(-2, 3))
    assert augment_sample(audio, visual, 0, 0, 0, gen)[0] is audio  # off: no copy, no change


def test_modality_dropout_keeps_both_at_one_minus_the_rate_and_else_drops_one_modality():
    """``scenario=modality_dropout`` (FT's modality-dropout baseline): its composed settings, and the training draws
    they give: complete with probability 1 - rate, otherwise audio (zeros) or image (black) lost, never both."""
    from collections import Counter

    from uvav.scenarios import draw_training_case, sample_generator

    from .conftest import compose_config

    cfg = compose_config("method=ft", "scenario=modality_dropout", "scenario.missing_rate=0.3")
    assert list(cfg.noise.audio) == ["missing"] and list(cfg.noise.visual) == ["black"]
    cases = tuple(cfg.scenario.train_cases)
    draws = Counter(CASES[draw_training_case(cases, cfg.scenario.missing_rate, sample_generator("train", 0, 0, i))]
                    for i in range(4000))
    assert set(draws) == {"complete", "noisy_audio", "noisy_visual"}
    assert draws["complete"] / 4000 == pytest.approx(0.7, abs=0.03)
    assert draws["noisy_audio"] / 4000 == pytest.approx(0.15, abs=0.03)
