"""The four cases and ``mixed``: what each does to each modality, and the corruption functions.

Corruptions act per sample on *normalised* features: audio fbank ``[T, F]``, images ``[3, H, W]``; their
strengths are those of the paper's code. Every random draw comes from a ``torch.Generator`` seeded per
sample (:func:`sample_generator`): an evaluation sample's corruption is a function of the evaluation seed, the
case and the sample's index, a training sample's of the run's seed, the epoch and its index. So batches can
be formed in any order, by any number of DataLoader workers, and a resumed run draws what it would have.
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F

from uvav.cases import CASE_EFFECTS, CASE_INDEX, CASES, Case
from uvav.config import NoiseConfig


def _randint(low: int, high: int, gen: torch.Generator) -> int:
    """Uniform integer in [low, high]."""
    return int(torch.randint(low, high + 1, (1,), generator=gen).item())


def corrupt_audio(x: torch.Tensor, kind: str, noise: NoiseConfig, both: bool, gen: torch.Generator) -> torch.Tensor:
    """Corrupt one fbank ``[T, F]``."""
    s = noise.severity
    if kind == "missing":
        return torch.zeros_like(x)
    if kind == "gaussian":
        std = (noise.both_gaussian_std if both else noise.audio_gaussian_std) * s
        return x + std * torch.randn(x.shape, generator=gen, dtype=x.dtype)
    if kind == "time_roll":
        limit = int(round(noise.max_time_roll * s))
        return torch.roll(x, shifts=_randint(-limit, limit, gen), dims=0) if limit else x
    if kind == "freq_mask":
        width = _randint(0, min(int(round(noise.max_freq_mask * s)), x.shape[1]), gen)
        start = _randint(0, x.shape[1] - width, gen)
        out = x.clone()
        out[:, start:start + width] = 0.0
        return out
    raise ValueError(f"unknown audio noise {kind!r}")


def _gaussian_kernel(size: int, sigma: float) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    kernel = torch.exp(-(coords**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def blur(image: torch.Tensor, kernel_size: int, sigma: float) -> torch.Tensor:
    """Separable gaussian blur of ``[C, H, W]`` with reflect padding."""
    k = _gaussian_kernel(kernel_size, sigma).to(image.dtype)
    c = image.shape[0]
    pad = kernel_size // 2
    x = image.unsqueeze(0)
    x = F.conv2d(F.pad(x, (pad, pad, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    x = F.conv2d(F.pad(x, (0, 0, pad, pad), mode="replicate"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return x.squeeze(0)


def corrupt_visual(x: torch.Tensor, kind: str, noise: NoiseConfig, gen: torch.Generator) -> torch.Tensor:
    """Corrupt one image ``[3, H, W]``. Kernel and pixel sizes are defined at 224 px and scaled to H."""
    s = noise.severity
    size = x.shape[-1]
    if kind == "black":
        return torch.zeros_like(x)
    if kind == "gaussian":
        return x + noise.visual_gaussian_std * s * torch.randn(x.shape, generator=gen, dtype=x.dtype)
    if kind == "blur":
        kernel = max(3, int(round(noise.blur_kernel * size / 224)) | 1)
        sigma = (0.3 * ((kernel - 1) * 0.5 - 1) + 0.8) * s  # torchvision's default sigma for this kernel
        return blur(x, kernel, sigma) if sigma > 0 else x
    if kind == "pixelate":
        if s <= 0:
            return x
        small = max(1, int(round(size * noise.pixelate_factor / s)))
        low = F.interpolate(x.unsqueeze(0), size=(small, small), mode="area")
        return F.interpolate(low, size=x.shape[-2:], mode="nearest").squeeze(0)
    raise ValueError(f"unknown visual noise {kind!r}")


def corrupt_sample(
    audio: torch.Tensor, visual: torch.Tensor, case_id: int, noise: NoiseConfig, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply case ``CASES[case_id]`` to one sample (fbank ``[T, F]``, image ``[3, H, W]``), choosing one noise
    kind per corrupted modality; inputs are left untouched."""
    if noise.severity == 0:
        return audio, visual
    noisy_a, noisy_v = CASE_EFFECTS[CASES[case_id]]
    if noisy_a:
        kind = noise.audio[_randint(0, len(noise.audio) - 1, gen)]
        audio = corrupt_audio(audio, kind, noise, both=noisy_v, gen=gen)
    if noisy_v:
        kind = noise.visual[_randint(0, len(noise.visual) - 1, gen)]
        visual = corrupt_visual(visual, kind, noise, gen)
    return audio, visual


def draw_case(choices: tuple[str, ...] | list[str], gen: torch.Generator) -> int:
    """A case index (into ``CASES``) drawn uniformly over ``choices``: a training sample's case among the stage's
    training cases, an evaluation sample's case under ``mixed``."""
    return CASE_INDEX[choices[int(torch.randint(len(choices), (1,), generator=gen))]]


def draw_training_case(cases: tuple[str, ...] | list[str], missing_rate: float | None, gen: torch.Generator) -> int:
    """A training sample's case: uniform over ``cases`` when ``missing_rate`` is None (with all four cases, 3 in 4
    samples are corrupted); else ``complete`` with probability 1 - ``missing_rate`` and otherwise one of the
    corrupted cases among ``cases``, uniformly (``scenario.missing_rate``). Cases without both kinds: uniform."""
    corrupted = [c for c in cases if c != Case.COMPLETE.value]
    if missing_rate is None or not corrupted or len(corrupted) == len(cases):
        return draw_case(cases, gen)
    if float(torch.rand((), generator=gen)) >= missing_rate:
        return CASE_INDEX[Case.COMPLETE.value]
    return draw_case(corrupted, gen)


def sample_seed(*parts: object) -> int:
    """A 63-bit seed from any parts (e.g. seed, epoch, sample index), the same in every process."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def sample_generator(*parts: object) -> torch.Generator:
    """A generator whose draws depend only on ``parts``: a sample's corruption is the same in any batch order,
    with any number of DataLoader workers, and after a resume."""
    return torch.Generator().manual_seed(sample_seed(*parts))


def eval_generator(noise: NoiseConfig, case: str, salt: int, index: int) -> torch.Generator:
    """The draws of sample ``index`` of an evaluation set under ``case`` (``salt``: 0 test, 1 validation)."""
    return sample_generator("eval", noise.eval_seed, salt, case, index)


def eval_sample(
    audio: torch.Tensor, visual: torch.Tensor, case: str, noise: NoiseConfig, salt: int, index: int
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Sample ``index`` of an evaluation set under ``case``: (audio, visual, case id). ``mixed`` draws the case
    of each sample uniformly over the four cases."""
    gen = eval_generator(noise, case, salt, index)
    case_id = draw_case(CASES, gen) if case == "mixed" else CASE_INDEX[case]
    audio, visual = corrupt_sample(audio, visual, case_id, noise, gen)
    return audio, visual, case_id


def augment_sample(
    audio: torch.Tensor, visual: torch.Tensor, freq_mask: int, time_mask: int, image_shift: int,
    gen: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Training augmentation of one sample: one frequency and one time mask (SpecAugment), a random image
    shift with zero fill. Inputs are left untouched."""
    if not (freq_mask or time_mask or image_shift):
        return audio, visual
    audio = audio.clone()
    frames, bins = audio.shape
    if freq_mask:
        width = _randint(0, min(freq_mask, bins), gen)
        start = _randint(0, bins - width, gen)
        audio[:, start:start + width] = 0.0
    if time_mask:
        width = _randint(0, min(time_mask, frames), gen)
        start = _randint(0, frames - width, gen)
        audio[start:start + width] = 0.0
    if image_shift:
        dy, dx = _randint(-image_shift, image_shift, gen), _randint(-image_shift, image_shift, gen)
        shifted = torch.zeros_like(visual)
        h, w = visual.shape[-2:]
        shifted[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = (
            visual[:, max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)])
        visual = shifted
    return audio, visual
