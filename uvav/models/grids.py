"""Token grids of the two modalities: how many patches an fbank and an image give (plain arithmetic, no torch, so
that checking a config's prompt length imports nothing heavy)."""

from __future__ import annotations


def audio_grid(num_mel_bins: int, target_length: int, patch_size: int) -> tuple[int, int]:
    """Token grid (frequency, time) of an fbank laid out as ``[1, F, T]``."""
    return num_mel_bins // patch_size, target_length // patch_size


def image_grid(image_size: int, patch_size: int) -> tuple[int, int]:
    return image_size // patch_size, image_size // patch_size
