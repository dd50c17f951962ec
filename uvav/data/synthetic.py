"""The embedded default dataset, generated in code in a few seconds.

Eight classes. The audio shows a frequency band that encodes ``class % 4``; the image shows stripes whose
orientation encodes ``class // 2``. Either modality alone narrows the class down to two candidates
(at best 50 % accuracy); only both together identify it. Losing a modality therefore really costs
accuracy, and what a method recovers under a missing or noisy modality is visible.
"""

from __future__ import annotations

import math

import torch

from uvav.data.base import AVData, AVSplit

NUM_CLASSES = 8
CLASS_NAMES = [f"a{c % 4}_v{c // 2}" for c in range(NUM_CLASSES)]


def _audio(labels: torch.Tensor, frames: int, mel: int, noise: float, gen: torch.Generator) -> torch.Tensor:
    """A band at a class-specific height (4 heights), switched on for a random stretch of time."""
    n = labels.shape[0]
    x = noise * torch.randn(n, frames, mel, generator=gen)
    width = max(2, mel // 12)
    centres = ((labels % 4).float() + 0.5) * (mel / 4) + torch.randint(-2, 3, (n,), generator=gen).float()
    bins = torch.arange(mel).float()
    band = torch.exp(-0.5 * ((bins[None, :] - centres[:, None]) / (width / 2)) ** 2)  # [N, F]
    length = torch.randint(frames // 3, frames + 1, (n,), generator=gen)
    start = (torch.rand(n, generator=gen) * (frames - length + 1).float()).long()
    t = torch.arange(frames)
    on = ((t[None, :] >= start[:, None]) & (t[None, :] < (start + length)[:, None])).float()  # [N, T]
    amplitude = 1.0 + 0.5 * torch.rand(n, 1, 1, generator=gen)
    return x + amplitude * on[:, :, None] * band[:, None, :]


def _visual(labels: torch.Tensor, size: int, noise: float, gen: torch.Generator) -> torch.Tensor:
    """Stripes (period 4 px) at one of four orientations, random phase and colour, on a noisy background."""
    n = labels.shape[0]
    angles = (labels // 2).float() * (math.pi / 4)  # 0, 45, 90, 135 degrees
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    proj = torch.cos(angles)[:, None, None] * xx + torch.sin(angles)[:, None, None] * yy
    phase = torch.rand(n, 1, 1, generator=gen) * 2 * math.pi
    stripes = torch.sin(2 * math.pi * proj / 4.0 + phase)  # [N, H, W]
    colour = 0.5 + torch.rand(n, 3, 1, 1, generator=gen)
    return colour * stripes[:, None] + noise * torch.randn(n, 3, size, size, generator=gen)


def make_split(n: int, frames: int, mel: int, size: int, cfg, gen: torch.Generator) -> AVSplit:
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=gen)
    return AVSplit(
        _audio(labels, frames, mel, cfg.audio_noise, gen), _visual(labels, size, cfg.visual_noise, gen), labels
    )


def load_synthetic(cfg) -> AVData:
    """Generate train / val / test from ``cfg.seed`` (same seed -> same tensors)."""
    gen = torch.Generator().manual_seed(cfg.seed)
    args = (cfg.target_length, cfg.num_mel_bins, cfg.image_size, cfg)
    train = make_split(cfg.num_train, *args, gen)
    val = make_split(cfg.num_val, *args, gen)
    test = make_split(cfg.num_test, *args, gen)
    info = {
        "source": "synthetic (generated in code)",
        "split": f"generated: {cfg.num_train} train / {cfg.num_val} val / {cfg.num_test} test, seed {cfg.seed}",
        "audio_shape": list(train.audio.shape[1:]),
        "visual_shape": list(train.visual.shape[1:]),
    }
    return AVData(train, val, test, CLASS_NAMES, info)
