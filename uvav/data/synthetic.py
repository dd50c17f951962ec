"""The embedded default dataset, generated in code in a few seconds.

Eight classes. Each modality carries a *strong* cue for part of the class and a *weak* cue for the rest:

- audio: a loud frequency band at one of four heights encodes ``class % 4``; a faint second band near the top
  encodes ``class // 4`` and agrees with the label in ``weak_cue_reliability`` of the samples (85 %);
- image: stripes at one of four orientations encode ``class // 2``; a red or blue tint encodes ``class % 2``,
  just as reliable as the faint band.

Both strong cues together identify the class, so a model trained on complete data leans on them. With one
modality lost, the strong cue of the other narrows the class to two candidates (50 %), and only a model that
has adapted to the weak cue of the remaining modality gets further (up to ~85 %). Losing a modality
therefore really costs accuracy, and what a method recovers under a missing or noisy modality is visible.

``labels_per_clip=2`` makes it multi-label (a cheap stand-in for AudioSet): each clip's sound and image come from
two independent sources, the audio encodes one class and the image another, and the clip carries both labels
(multi-hot, one label where the two agree). Such runs train with BCE and are scored in mAP.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from uvav.config import ConfigError, DataConfig
from uvav.data import DATASETS, Dataset

if TYPE_CHECKING:
    import torch

    from uvav.data.base import AVData, TensorSplit


NUM_CLASSES = 8
CLASS_NAMES = [f"a{c % 4}_v{c // 2}" for c in range(NUM_CLASSES)]


def _weak_cue(bit: torch.Tensor, reliability: float, gen: torch.Generator) -> torch.Tensor:
    """``bit`` flipped in ``1 - reliability`` of the samples."""
    import torch

    flip = torch.rand(bit.shape[0], generator=gen) >= reliability
    return torch.where(flip, 1 - bit, bit)


def _audio(labels: torch.Tensor, frames: int, mel: int, cfg, gen: torch.Generator) -> torch.Tensor:
    """A band at a class-specific height (4 heights) for a random stretch of time, plus the faint top band."""
    import torch

    n, noise = labels.shape[0], cfg.audio_noise
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
    x = x + amplitude * on[:, :, None] * band[:, None, :]
    faint = _weak_cue(labels // 4, cfg.weak_cue_reliability, gen).float()  # [N]
    top = torch.exp(-0.5 * ((bins - (mel - 1.5 * width)) / (width / 2)) ** 2)  # [F]
    return x + cfg.weak_cue_strength * faint[:, None, None] * top[None, None, :]


def _visual(labels: torch.Tensor, size: int, cfg, gen: torch.Generator) -> torch.Tensor:
    """Stripes (period 4 px) at one of four orientations, random phase and colour, a weak red/blue tint, noise."""
    import torch

    n, noise = labels.shape[0], cfg.visual_noise
    angles = (labels // 2).float() * (math.pi / 4)  # 0, 45, 90, 135 degrees
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    proj = torch.cos(angles)[:, None, None] * xx + torch.sin(angles)[:, None, None] * yy
    phase = torch.rand(n, 1, 1, generator=gen) * 2 * math.pi
    stripes = torch.sin(2 * math.pi * proj / 4.0 + phase)  # [N, H, W]
    colour = 0.5 + torch.rand(n, 3, 1, 1, generator=gen)
    sign = 2 * _weak_cue(labels % 2, cfg.weak_cue_reliability, gen).float() - 1  # +1 red, -1 blue
    tint = torch.zeros(n, 3, 1, 1)
    tint[:, 0, 0, 0], tint[:, 2, 0, 0] = sign, -sign
    image = colour * stripes[:, None] + cfg.weak_cue_strength * tint
    return image + noise * torch.randn(n, 3, size, size, generator=gen)


def make_split(n: int, frames: int, mel: int, size: int, cfg, gen: torch.Generator) -> TensorSplit:
    """``n`` clips; one label each, or (``cfg.labels_per_clip == 2``) the multi-hot union of the audio's class
    and an independently drawn image class."""
    import torch

    from uvav.data.base import TensorSplit

    labels = torch.randint(0, NUM_CLASSES, (n,), generator=gen)
    if cfg.labels_per_clip == 1:
        return TensorSplit(_audio(labels, frames, mel, cfg, gen), _visual(labels, size, cfg, gen), labels)
    image_labels = torch.randint(0, NUM_CLASSES, (n,), generator=gen)
    multi_hot = torch.zeros(n, NUM_CLASSES)
    multi_hot[torch.arange(n), labels] = 1.0
    multi_hot[torch.arange(n), image_labels] = 1.0
    return TensorSplit(_audio(labels, frames, mel, cfg, gen), _visual(image_labels, size, cfg, gen), multi_hot)


@dataclass
class SyntheticDataConfig(DataConfig):
    name: str = "synthetic"
    num_train: int = 2400
    num_val: int = 600
    num_test: int = 1000
    audio_noise: float = 0.6  # std of the background noise in the generated fbank (normalised units)
    visual_noise: float = 0.6
    weak_cue_strength: float = 0.3  # amplitude of the faint band / the tint (see uvav/data/synthetic.py)
    weak_cue_reliability: float = 0.85  # share of samples whose weak cue agrees with the label
    labels_per_clip: int = 1  # 2: multi-label, the audio's class and an independent image class (BCE, mAP)


def load_synthetic(cfg, cache_dir: str | None = None) -> AVData:
    """Generate train / val / test from ``cfg.seed`` (same seed -> same tensors)."""
    import torch

    from uvav.data.base import AVData
    from uvav.data.corrupting import check_no_corruption

    check_no_corruption(cfg, "synthetic")
    if cfg.labels_per_clip not in (1, 2):
        raise ConfigError(f"data.labels_per_clip={cfg.labels_per_clip}: 1 (single-label) or 2 (multi-label: the "
                          "audio's class and an independent image class)")
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
        **({"labels": "multi-label: audio class + independent image class"} if cfg.labels_per_clip == 2 else {}),
    }
    return AVData(train, val, test, CLASS_NAMES, info)


DATASETS.register(Dataset("synthetic", SyntheticDataConfig, load_synthetic,
                          class_names=tuple(CLASS_NAMES), decoded=False, order=0))
