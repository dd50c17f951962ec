"""Import published CAV-MAE checkpoints (YuanGongND/cav-mae) into :class:`AVClassifier`.

CAV-MAE state dicts were saved from ``DataParallel`` (keys prefixed ``module.``) with timm 0.4.5 blocks,
whose parameter names (``attn.qkv``, ``attn.proj``, ``mlp.fc1`` ...) match current timm. The mapping is::

    patch_embed_{a,v}.*      -> {audio,visual}.patch_embed.*
    pos_embed_{a,v}          -> {audio,visual}.pos_embed   (trimmed / interpolated to our token grid)
    modality_{a,v}           -> {audio,visual}.modality
    blocks_{a,v}.N.*         -> {audio,visual}.blocks.N.*
    blocks_u.N.*             -> shared.N.*
    norm.*                   -> norm.*
    mlp_head.{0,1}.*         -> head.{0,1}.*               (only when the shapes match)

Every CAV-MAE block (not only ``blocks_u``) carries modality-specific norms ``norm{1,2}_{a,v}``; with the
final ``norm_a``/``norm_v`` they serve CAV-MAE's single-modality paths, have no slot here and are reported
as ``unused``. Pre-training-only keys (``decoder_*``, ``mask_token``) are reported as ``ignored``.
``fusion.*`` has no CAV-MAE counterpart and stays as initialised (reported ``missing``).

uvav's own layout (a uvav model's state dict, any preset) loads too: its keys are ours already.

The coverage rule: an import must fill every tensor of both modality encoders (our ``audio.*`` and ``visual.*``:
patch and position embeddings, modality embeddings, every encoder block). The head, the fusion layers, the
shared blocks and the final norm may stay as initialised: a pretrained CAV-MAE has no ``mlp_head`` (a fine-tuned
one has a head of its own class count), none has uvav's fusion, and ``blocks_u`` fills ``shared`` only when
``backbone.shared_depth`` matches. An import that misses encoder tensors raises :class:`CheckpointError` listing
what matched and what did not, unless ``backbone.allow_partial=true``; a partial import is logged at WARNING.

Audio position embeddings cover a (128 / patch height freq x T / patch width time) grid, row-major over (freq,
time), i.e. 8 x 64 for CAV-MAE's 16 px patches and 1024 frames; the patch height is read from the checkpoint's
patch-embedding kernel. A shorter ``target_length`` keeps the first time columns (the maintainers' advice,
and identical to regenerating the fixed sin-cos table for the shorter grid); a longer one is bilinearly
interpolated over the grid.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from uvav.errors import UserError
from uvav.models.classifier import AVClassifier

log = logging.getLogger(__name__)

CAVMAE_MEL_BINS = 128  # CAV-MAE's fbank (docs/facts.md §2); a checkpoint's audio grid has 128 / patch rows
CAVMAE_AUDIO_FREQ_ROWS = CAVMAE_MEL_BINS // 16
_PREFIX = "module."

ENCODER_PREFIXES = ("audio.", "visual.")  # the coverage rule: every tensor under these must load
_UNUSED = "<unused>"
_IGNORED = "<ignored>"

# (pattern on the prefix-stripped CAV-MAE key, replacement or marker); first match wins.
_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), target)
    for pattern, target in (
        (r"^(decoder_.*|mask_token)$", _IGNORED),
        (r"^blocks_[auv]\.\d+\.norm[12]_[av]\.(weight|bias)$", _UNUSED),
        (r"^norm_[av]\.(weight|bias)$", _UNUSED),
        (r"^patch_embed_a\.(.+)$", r"audio.patch_embed.\1"),
        (r"^patch_embed_v\.(.+)$", r"visual.patch_embed.\1"),
        (r"^pos_embed_a$", "audio.pos_embed"),
        (r"^pos_embed_v$", "visual.pos_embed"),
        (r"^modality_a$", "audio.modality"),
        (r"^modality_v$", "visual.modality"),
        (r"^blocks_a\.(\d+)\.(.+)$", r"audio.blocks.\1.\2"),
        (r"^blocks_v\.(\d+)\.(.+)$", r"visual.blocks.\1.\2"),
        (r"^blocks_u\.(\d+)\.(.+)$", r"shared.\1.\2"),
        (r"^norm\.(weight|bias)$", r"norm.\1"),
        (r"^mlp_head\.([01])\.(weight|bias)$", r"head.\1.\2"),
    )
)


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be read, is not a state dict, or does not cover the model's encoders."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """``backbone.checkpoint`` names no file."""


@dataclass
class ImportReport:
    """What a CAV-MAE import filled, skipped and changed. Key lists use CAV-MAE names without ``module.``,
    except ``loaded`` and ``missing`` which use ours."""

    source: str = "<state dict>"
    loaded: list[str] = field(default_factory=list)  # our keys filled from the checkpoint
    missing: list[str] = field(default_factory=list)  # our keys left as initialised
    unexpected: list[str] = field(default_factory=list)  # their keys with no slot in this model
    unused: list[str] = field(default_factory=list)  # known CAV-MAE keys our architecture has no use for
    ignored: list[str] = field(default_factory=list)  # pre-training-only decoder keys
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # position-embedding trims / interpolations

    @property
    def num_loaded(self) -> int:
        return len(self.loaded)

    @property
    def encoder_missing(self) -> list[str]:
        """Our encoder tensors (``audio.*``, ``visual.*``) the checkpoint did not fill: the coverage rule's gap."""
        return [key for key in self.missing if key.startswith(ENCODER_PREFIXES)]

    def record(self) -> dict[str, object]:
        """What ``metrics.json`` keeps (``initial_weights``): counts, and the keys that did not load."""
        return {"loaded": len(self.loaded), "missing": self.missing, "unexpected": self.unexpected,
                "mismatched": [[key, list(theirs), list(ours)] for key, theirs, ours in self.mismatched],
                "unused": len(self.unused), "ignored": len(self.ignored), "notes": self.notes}

    def summary(self) -> str:
        """A few lines for the log."""
        total = len(self.loaded) + len(self.missing)
        lines = [f"CAV-MAE import from {self.source}: loaded {len(self.loaded)}/{total} tensors"]
        if self.missing:
            groups = Counter(key.split(".")[0] for key in self.missing)
            lines.append("  missing (kept as initialised): "
                         + ", ".join(f"{name}.* x{n}" for name, n in sorted(groups.items())))
        if self.mismatched:
            lines.append("  skipped, shape mismatch: " + ", ".join(
                f"{key} {list(theirs)} vs ours {list(ours)}" for key, theirs, ours in self.mismatched))
        if self.unexpected:
            lines.append(f"  unexpected ({len(self.unexpected)}): {_compact(self.unexpected)}")
        if self.unused:
            lines.append(f"  unused modality-specific norms: {len(self.unused)}")
        if self.ignored:
            lines.append(f"  ignored pre-training keys (decoder_*, mask_token): {len(self.ignored)}")
        lines.extend(f"  {note}" for note in self.notes)
        return "\n".join(lines)


def _compact(keys: list[str], limit: int = 10) -> str:
    """``blocks_a.2.*`` ... ``blocks_a.10.*`` -> ``blocks_a.{2..10}.* (n)`` (ours: ``audio.blocks.{..}.*``);
    other keys verbatim, at most ``limit`` of them."""
    blocks: dict[str, list[int]] = {}
    counts: Counter[str] = Counter()
    others: list[str] = []
    for key in keys:
        match = re.match(r"^(blocks_[auv]|audio\.blocks|visual\.blocks|shared|fusion)\.(\d+)\.", key)
        if match:
            blocks.setdefault(match[1], []).append(int(match[2]))
            counts[match[1]] += 1
        else:
            others.append(key)
    parts = [f"{stem}.{{{min(idx)}..{max(idx)}}}.* ({counts[stem]})" for stem, idx in blocks.items()]
    parts += others[:limit]
    if len(others) > limit:
        parts.append(f"+{len(others) - limit} more")
    return ", ".join(parts)


def strip_prefix(key: str) -> str:
    """Remove (possibly repeated) ``module.`` prefixes left by ``DataParallel``/DDP."""
    while key.startswith(_PREFIX):
        key = key[len(_PREFIX):]
    return key


def cavmae_key_to_ours(key: str) -> str | None:
    """Our name for a prefix-stripped CAV-MAE key, ``"<unused>"``/``"<ignored>"`` markers, or None."""
    for pattern, target in _RULES:
        if pattern.match(key):
            return target if target in (_UNUSED, _IGNORED) else pattern.sub(target, key)
    return None


def resize_pos_embed(
    pos: torch.Tensor, src_grid: tuple[int, int], dst_grid: tuple[int, int], trim_cols: bool = True
) -> torch.Tensor:
    """``[1, H*W, D]`` over a row-major (H, W) grid -> ``[1, H'*W', D]``.

    With ``trim_cols``, a shorter W' keeps the first W' columns; any remaining difference is bilinearly
    interpolated (``align_corners=False``).
    """
    (h, w), (dst_h, dst_w) = src_grid, dst_grid
    dim = pos.shape[-1]
    grid = pos.reshape(1, h, w, dim)
    if trim_cols and dst_w <= w:
        grid = grid[:, :, :dst_w]
    if tuple(grid.shape[1:3]) != (dst_h, dst_w):
        resized = F.interpolate(grid.permute(0, 3, 1, 2).float(), size=(dst_h, dst_w), mode="bilinear",
                                align_corners=False)
        grid = resized.permute(0, 2, 3, 1).to(pos.dtype)
    return grid.reshape(1, dst_h * dst_w, dim).contiguous()


def _describe_resize(src: tuple[int, int], dst: tuple[int, int], trim_cols: bool) -> str:
    steps, now = [], src
    if trim_cols and dst[1] < src[1]:
        steps.append("trimmed")
        now = (src[0], dst[1])
    if now != dst:
        steps.append("interpolated")
    return f"{' + '.join(steps)} from grid {src[0]}x{src[1]} to {dst[0]}x{dst[1]}"


def _source_grid(target: str, num_tokens: int, audio_patch: int | None) -> tuple[int, int] | None:
    """Token grid of a checkpoint's position embedding: audio (128 mel bins / its patch height) x the rest (8 x N/8
    for CAV-MAE's 16 px patches), visual square."""
    if target == "audio.pos_embed":
        rows = CAVMAE_MEL_BINS // audio_patch if audio_patch else CAVMAE_AUDIO_FREQ_ROWS
        return (rows, num_tokens // rows) if rows and num_tokens % rows == 0 else None
    side = math.isqrt(num_tokens)
    return (side, side) if side * side == num_tokens else None


def _audio_patch_height(state: dict[str, torch.Tensor]) -> int | None:
    """The audio patch height of a checkpoint (CAV-MAE's or uvav's layout), from its patch-embedding kernel."""
    for raw_key, value in state.items():
        if strip_prefix(raw_key) in ("patch_embed_a.proj.weight", "audio.patch_embed.proj.weight") and value.dim() == 4:
            return int(value.shape[2])
    return None


def map_cavmae_state_dict(
    state: dict[str, torch.Tensor], model: AVClassifier
) -> tuple[dict[str, torch.Tensor], ImportReport]:
    """Rename a CAV-MAE state dict onto ``model``'s keys, adapting position embeddings to its grids.

    Returns the tensors to load (``model.load_state_dict(mapped, strict=False)``) and a report. Shape
    mismatches are skipped and reported, never raised. ``state`` is not modified.
    """
    ours = model.state_dict()
    grids = {"audio.pos_embed": tuple(model.audio.grid), "visual.pos_embed": tuple(model.visual.grid)}
    report = ImportReport()
    mapped: dict[str, torch.Tensor] = {}
    audio_patch = _audio_patch_height(state)
    for raw_key, value in state.items():
        key = strip_prefix(raw_key)
        target = cavmae_key_to_ours(key)
        if target is None and key in ours:  # uvav's own layout (a uvav model's state dict)
            target = key
        if target == _IGNORED:
            report.ignored.append(key)
            continue
        if target == _UNUSED:
            report.unused.append(key)
            continue
        if target is None or target not in ours:
            report.unexpected.append(key)
            continue
        expected = tuple(ours[target].shape)
        if target in grids and tuple(value.shape) != expected:
            src_grid = _source_grid(target, value.shape[1], audio_patch) if value.dim() == 3 else None
            if src_grid is not None and value.shape[0] == 1 and value.shape[2] == expected[2]:
                dst_grid = grids[target]
                trim = target == "audio.pos_embed"
                value = resize_pos_embed(value, src_grid, dst_grid, trim_cols=trim)
                report.notes.append(f"{key}: {_describe_resize(src_grid, dst_grid, trim)}")
        if tuple(value.shape) != expected:
            report.mismatched.append((key, tuple(value.shape), expected))
            continue
        mapped[target] = value
    report.loaded = [key for key in ours if key in mapped]
    report.missing = [key for key in ours if key not in mapped]
    return mapped, report


def _extract_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for wrapper in ("state_dict", "model"):
            if isinstance(obj.get(wrapper), dict):
                obj = obj[wrapper]
                break
    if not isinstance(obj, dict) or not obj:
        raise ValueError(f"{path}: expected a (non-empty) state dict, got {type(obj).__name__}")
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{path}: not a state dict; non-tensor entries: {', '.join(bad[:5])}")
    return obj


def load_cavmae_checkpoint(model: AVClassifier, path: str | Path, allow_partial: bool = False) -> ImportReport:
    """Load a CAV-MAE (or uvav) checkpoint file into ``model`` and report what happened.

    Accepts a plain state dict or a dict holding one under ``"state_dict"`` or ``"model"``. Raises
    :class:`CheckpointNotFoundError` for a missing file and :class:`CheckpointError` (naming the file) when it
    cannot be read with ``weights_only=True``, is not a state dict, fills none of the model's tensors, or, unless
    ``allow_partial``, leaves encoder tensors unfilled (the coverage rule in the module docstring).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(f"backbone.checkpoint={path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, KeyError, EOFError ...
        raise CheckpointError(f"{path}: not a readable checkpoint (torch.load with weights_only=True: "
                              f"{_reason(err)}); uvav never loads checkpoints with pickle code execution. "
                              "Check backbone.checkpoint") from None
    try:
        state = _extract_state_dict(obj, path)
    except ValueError as err:
        raise CheckpointError(str(err)) from None
    mapped, report = map_cavmae_state_dict(state, model)
    report.source = str(path)
    if not mapped:
        raise CheckpointError(f"{path}: no tensor matches the model; is this a CAV-MAE checkpoint of the same "
                              f"size?\n{report.summary()}")
    gap = report.encoder_missing
    if gap and not allow_partial:
        encoder = [key for key in report.loaded if key.startswith(ENCODER_PREFIXES)]
        raise CheckpointError(
            f"{path}: fills {len(encoder)} of {len(encoder) + len(gap)} encoder tensors of this model (the rule: "
            "every audio.* and visual.* tensor must load; head, fusion, shared blocks and norm may stay as "
            f"initialised). Not filled: {_compact(gap)}. Filled: {_compact(report.loaded) or 'none'}."
            + (f" {len(report.mismatched)} of their tensors have other shapes, e.g. {report.mismatched[0][0]} "
               f"{list(report.mismatched[0][1])} vs ours {list(report.mismatched[0][2])}: another backbone size?"
               if report.mismatched else "")
            + " Use a checkpoint of the same backbone (backbone=...), or backbone.allow_partial=true to load it "
              "anyway")
    model.load_state_dict(mapped, strict=False)
    if gap:
        log.warning("partial checkpoint import (backbone.allow_partial=true): %d encoder tensors left as "
                    "initialised\n%s", len(gap), report.summary())
    return report


def _reason(err: Exception) -> str:
    """torch's reason for refusing a file, without its advice to retry with ``weights_only=False``."""
    lines = str(err).replace("WeightsUnpickler error:", "\n").splitlines()
    kept = [line.strip() for line in lines if line.strip() and "weights_only" not in line
            and not line.strip().startswith(("Weights only load failed", "Check the documentation"))]
    detail = kept[0].split(". ")[0][:200] if kept else ""
    return f"{type(err).__name__}: {detail}" if detail else type(err).__name__
