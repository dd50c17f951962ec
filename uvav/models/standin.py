"""Learnable stand-in tokens for a missing modality (missing-modality-prompt style), inserted into a trained
:class:`~uvav.models.classifier.AVClassifier` after its encoders and before the fusion.

A modality is *missing* in a sample when its encoder output is the encoder output of an all-zero input (the
*missing signature*, :func:`missing_signature`): the ``missing`` audio and ``black`` image corruptions give exactly
zeros after normalisation, and the frozen encoders are deterministic. The comparison allows for reduced precision
(tokens stored in fp16/bf16, or encoded under bf16 autocast; a stage computes the signature under the autocast its
data is encoded under): a row counts as missing when the mean absolute difference of its tokens from the signature is
at most ``tolerance`` times the signature's mean absolute value (default 0.01: fp16 storage moves a missing row by
~2e-4 of that scale, bf16 autocast by ~5e-3 in a 768-d, 11-block encoder; the closest present input measured, a
zero-mean noise image pixelated to one colour, is ~0.03 away, the other corruptions 0.15 or more). Rows found missing
get that modality's tokens replaced by the learned stand-ins; every other row (complete, or noisy but present) is
left as it is. The stand-ins start equal to the signature, so before training the model computes what it computed
before (up to the float differences between a missing row's tokens and the signature).

State-dict keys: the model's keep theirs; new: ``standins.audio`` ``[N_audio, D]`` and ``standins.visual``
``[N_visual, D]`` (the parameters) and the buffers ``standins.missing_audio``, ``standins.missing_visual`` (the
signature the rows are compared with).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import torch
from torch import nn

from uvav.models.classifier import AVClassifier


@torch.no_grad()
def missing_signature(model: AVClassifier, precision: Callable[[], AbstractContextManager] | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """The encoders' outputs ``[N_audio, D]``, ``[N_visual, D]`` of an all-zero fbank and an all-zero image, as fp32
    on the model's device (the encoders in eval mode: no drop path), computed in fp32 or under ``precision`` (a
    factory of the autocast context the data will be encoded under, so that the signature carries the same rounding).
    Only whole patches reach the tokens, so an input of the grid's size gives what a zero input of the data's size
    gives."""
    weight = model.audio.patch_embed.proj.weight
    factory = {"device": weight.device, "dtype": weight.dtype}
    training = model.audio.training, model.visual.training
    model.audio.eval()
    model.visual.eval()
    try:
        (fa, ta), pa = model.audio.grid, model.audio.patch_embed.proj.kernel_size[0]
        (hv, wv), pv = model.visual.grid, model.visual.patch_embed.proj.kernel_size[0]
        with precision() if precision is not None else torch.autocast(weight.device.type, enabled=False):
            audio = model.encode_audio(torch.zeros(1, ta * pa, fa * pa, **factory))
            visual = model.encode_visual(torch.zeros(1, 3, hv * pv, wv * pv, **factory))
    finally:
        model.audio.train(training[0])
        model.visual.train(training[1])
    return audio[0].float(), visual[0].float()


def missing_rows(tokens: torch.Tensor, signature: torch.Tensor, tolerance: float) -> torch.Tensor:
    """``[B]`` bool: the rows of ``tokens`` ``[B, N, D]`` that are the missing ``signature`` ``[N, D]``: mean absolute
    difference at most ``tolerance`` x the signature's mean absolute value."""
    reference = signature.float()
    distance = (tokens.float() - reference).abs().mean(dim=(1, 2))
    return distance <= tolerance * reference.abs().mean()


class StandIns(nn.Module):
    """One learnable token sequence per modality, put in place of that modality's tokens in the rows where it is
    missing (:func:`missing_rows`); both start equal to the missing signature."""

    def __init__(self, audio_signature: torch.Tensor, visual_signature: torch.Tensor, tolerance: float) -> None:
        super().__init__()
        if not 0.0 <= tolerance < 1.0:
            raise ValueError(f"missing-signature tolerance must be in [0, 1), got {tolerance}")
        self.tolerance = float(tolerance)
        self.audio = nn.Parameter(audio_signature.detach().clone())
        self.visual = nn.Parameter(visual_signature.detach().clone())
        self.register_buffer("missing_audio", audio_signature.detach().clone())
        self.register_buffer("missing_visual", visual_signature.detach().clone())

    def missing(self, a: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B]`` bool each: the rows whose audio, and whose image, is missing."""
        return (missing_rows(a, self.missing_audio, self.tolerance),
                missing_rows(v, self.missing_visual, self.tolerance))

    def forward(self, a: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder outputs ``[B, N, D]`` with each missing modality's tokens replaced by its stand-ins (every step
        reaches both stand-ins, with zero gradient where no row is missing: no data-dependent branch)."""
        missing_a, missing_v = self.missing(a, v)
        a = torch.where(missing_a[:, None, None], self.audio.to(a.dtype), a)
        v = torch.where(missing_v[:, None, None], self.visual.to(v.dtype), v)
        return a, v

    def extra_repr(self) -> str:
        return (f"audio={tuple(self.audio.shape)}, visual={tuple(self.visual.shape)}, "
                f"tolerance={self.tolerance}")


def add_standins(model: AVClassifier, tolerance: float, precision: Callable[[], AbstractContextManager] | None = None
                 ) -> StandIns:
    """Give ``model`` stand-in tokens (``model.standins``), initialised to its missing signature (computed under
    ``precision``, :func:`missing_signature`), in place; raises when it has them already."""
    if model.standins is not None:
        raise ValueError("the model already has stand-in tokens (prepare applied twice?)")
    model.standins = StandIns(*missing_signature(model, precision), tolerance)
    return model.standins
