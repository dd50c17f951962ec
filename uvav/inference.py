"""Predictions of a finished run for audio/image inputs: the prediction methods of :class:`uvav.api.Run`, and
reading many inputs from a folder or a CSV.

Inputs go through the same feature pipeline as the training data (:mod:`uvav.data.features`): any sample rate,
channel count and clip length, any image PIL can read. A modality left out is *missing*: zeros after
normalisation, exactly like the ``missing`` / ``black`` corruptions of :mod:`uvav.scenarios`.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from uvav.cases import CASE_EFFECTS, CASE_INDEX, result_key
from uvav.errors import InputError, RunError
from uvav.methods import describe_result

if TYPE_CHECKING:
    from uvav.api import Run

log = logging.getLogger(__name__)

SOFTMAX, SIGMOID = "softmax", "sigmoid"  # how a prediction's probabilities were made (single- / multi-label run)
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass
class Prediction:
    """Top-k ``(class, probability)`` pairs for one input, and how they were obtained.

    ``mode``: ``ft`` (or ``lora``/``adapter``), ``pl_uncertain`` or ``pl_oracle``; ``case``: the case of the
    oracle prompt set; ``missing``: modalities left out (fed as zeros); ``error``: why this input was skipped.
    ``probability``: ``softmax`` (single-label run: the classes' probabilities sum to one) or ``sigmoid``
    (multi-label run: each class's own probability, independent of the others).
    """

    top: list[tuple[str, float]]
    mode: str
    case: str | None = None
    missing: tuple[str, ...] = ()
    audio: str | None = None
    image: str | None = None
    note: str | None = None
    error: str | None = None
    probability: str = SOFTMAX

    @property
    def label(self) -> str | None:
        return self.top[0][0] if self.top else None

    def __str__(self) -> str:
        if self.error:
            return f"error: {self.error}"
        cells = ", ".join(f"{name} {prob:.3f}" for name, prob in self.top)
        return f"{cells} [{describe_result(self.mode, self.case)}; {self.probability} probabilities]"


def features(run: Run, audio: Any = None, image: Any = None, sample_rate: int | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """Normalised model inputs ``([T, F] fbank, [3, S, S] image, missing modalities)`` for one sample."""
    _check_predictable(run)
    from uvav.data.features import images_to_float

    if audio is None and image is None:
        raise InputError("nothing to predict from: give audio=, image= or both")
    data = run.config.data
    missing = tuple(m for m, x in (("audio", audio), ("image", image)) if x is None)
    if audio is None:
        fb = torch.zeros(data.target_length, data.num_mel_bins)
    else:
        fb = _fbank(run, audio, sample_rate).sub_(run.normalization["audio_mean"])
        fb = fb.div_(run.normalization["audio_std"])
    if image is None:
        visual = torch.zeros(3, data.image_size, data.image_size)
    else:
        visual = images_to_float(_image(run, image)[None])[0]
    return fb, visual, missing


def predict(run: Run, audio: Any = None, image: Any = None, top_k: int = 3, prompts: str = "uncertain",
            sample_rate: int | None = None) -> Prediction:
    """Top-k classes for one sample. ``audio``: a file path, a waveform (tensor or array, ``[samples]`` or
    ``[channels, samples]``) with ``sample_rate``, or a ``(waveform, sample_rate)`` tuple. ``image``: a
    file path or a PIL image. Leave one out to treat it as missing. ``prompts``: ``uncertain`` (PL
    default: the case is unknown) or ``oracle`` (the case implied by which modality is missing, when the
    run trained a prompt set for it; otherwise uncertain, said in ``note``). FT runs use no prompts."""
    if sample_rate is not None and audio is not None and not isinstance(audio, (str, Path)):
        audio = (audio, sample_rate)
    return predict_many(run, [(audio, image)], top_k=top_k, prompts=prompts)[0]


def predict_many(run: Run, items: Iterable[tuple[Any, Any]], top_k: int = 3, prompts: str = "uncertain",
                 batch_size: int = 32, on_error: str = "raise") -> list[Prediction]:
    """:meth:`predict` for many ``(audio, image)`` pairs (either may be None), in batches.

    ``on_error="skip"``: an unreadable input gives a :class:`Prediction` with ``error`` set instead of
    raising."""
    from uvav.runtime import autocast_for

    _check_predictable(run)
    if on_error not in ("raise", "skip"):
        raise InputError(f"on_error={on_error!r}: raise or skip")
    if top_k < 1:
        raise InputError(f"top_k={top_k}: must be at least 1")
    if prompts not in ("uncertain", "oracle"):
        raise InputError(f"prompts={prompts!r}: uncertain or oracle for prediction")
    results: list[Prediction | None] = []
    pending: dict[tuple[str, str | None], list[tuple[int, torch.Tensor, torch.Tensor]]] = {}
    for audio, image in items:
        names = (_source_name(audio), _source_name(image))
        try:
            fb, visual, missing = features(run, audio, image)
        except InputError as exc:
            if on_error == "raise":
                raise
            results.append(Prediction([], "", None, (), *names, error=str(exc)))
            continue
        mode, case, note = _predict_mode(run, prompts, missing)
        results.append(Prediction([], result_key(run.method, mode), case, missing, *names, note=note,
                                  probability=SIGMOID if run.multi_label else SOFTMAX))
        pending.setdefault((mode, case), []).append((len(results) - 1, fb, visual))
    stage = run._stage(run.device)
    autocast = autocast_for(run.device, run.config.trainer.precision)
    k = min(top_k, len(run.class_names))
    for (mode, case), rows in pending.items():
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            probs = _probabilities(run, stage, torch.stack([r[1] for r in chunk]),
                                        torch.stack([r[2] for r in chunk]), mode, case, autocast)
            values, index = probs.topk(k, dim=1)
            for (i, _, _), v, ix in zip(chunk, values.tolist(), index.tolist(), strict=True):
                results[i].top = [(run.class_names[j], float(p)) for j, p in zip(ix, v, strict=True)]
    return results  # type: ignore[return-value]


@torch.inference_mode()
def _probabilities(run: Run, stage, audio: torch.Tensor, visual: torch.Tensor, mode: str, case: str | None,
                   autocast) -> torch.Tensor:
    """``[B, K]`` class probabilities: softmax (single-label run) or each class's sigmoid (multi-label run)."""
    from uvav.train import logits_for

    case_ids = torch.full((audio.shape[0],), CASE_INDEX[case] if case else 0, dtype=torch.long)
    with autocast():
        logits = logits_for(stage, audio.to(run.device), visual.to(run.device), case_ids, mode)
    logits = logits.float().cpu()
    return logits.sigmoid() if run.multi_label else logits.softmax(dim=1)


def _predict_mode(run: Run, prompts: str, missing: tuple[str, ...]) -> tuple[str, str | None, str | None]:
    """(prompt mode, oracle case, note). The case implied by a missing modality is the one whose
    corruptions include making it missing: audio -> noisy_audio, image -> noisy_visual."""
    if run.bank is None:
        return "none", None, (f"a {run.method} run has no prompts" if prompts == "oracle" else None)
    if run.bank.router is not None:  # method=cpl: mixed from the input, no case needed
        return "conditioned", None, ("input-conditioned prompts need no case" if prompts == "oracle" else None)
    if prompts == "uncertain":
        return "uncertain", None, None
    lost = ("audio" in missing, "image" in missing)  # (audio corrupted, visual corrupted), as CASE_EFFECTS
    case = next(c for c, effects in CASE_EFFECTS.items() if effects == lost)
    if case in run.bank.cases:
        return "oracle", case, None
    return "uncertain", None, f"no prompt set trained for case {case} (trained: {list(run.bank.cases)})"


def _check_predictable(run: Run) -> None:
    from uvav.data import DATASETS

    name = run.config.data.name
    if not run.dataset.decoded:
        decoded = [d.name for d in DATASETS if d.decoded]
        raise RunError(f"{run.path} was trained on the {name} dataset, whose features are generated in "
                       "code, not decoded from audio or image files: predicting from files makes no sense "
                       f"for it. Use .evaluate() (python -m uvav.evaluate), or a run on {', '.join(decoded)}.")


def _fbank(run: Run, audio: Any, sample_rate: int | None) -> torch.Tensor:
    from uvav.data.features import audio_features, fbank, to_mono_16k

    data = run.config.data
    if isinstance(audio, (str, Path)):
        path = _existing(audio, "audio")
        try:
            return audio_features(path, data.target_length, data.num_mel_bins)[0]
        except Exception as exc:  # noqa: BLE001 - any decoding failure names the file
            raise InputError(f"cannot read audio file {path}: {type(exc).__name__}: {exc}") from exc
    if isinstance(audio, tuple) and len(audio) == 2:
        audio, sample_rate = audio
    if sample_rate is None:
        raise InputError("a waveform needs its sample rate: predict(audio=wave, sample_rate=...) or "
                         "audio=(wave, rate)")
    try:
        wave = torch.as_tensor(np.asarray(audio, dtype=np.float32))
    except (TypeError, ValueError) as exc:
        raise InputError(f"audio must be a file path or a waveform, got {type(audio).__name__}") from exc
    if wave.dim() == 2 and wave.shape[0] > wave.shape[1]:
        wave = wave.T  # [samples, channels] (soundfile's layout) -> [channels, samples]
    if wave.dim() not in (1, 2) or not torch.isfinite(wave).all():
        raise InputError(f"waveform must be finite, [samples] or [channels, samples]; got {tuple(wave.shape)}")
    return fbank(to_mono_16k(wave, int(sample_rate)), data.target_length, data.num_mel_bins)[0]


def _image(run: Run, image: Any) -> torch.Tensor:
    from uvav.data.features import image_to_uint8, load_image

    size = run.config.data.image_size
    if isinstance(image, Image.Image):
        return image_to_uint8(image, size)
    if not isinstance(image, (str, Path)):
        raise InputError(f"image must be a file path or a PIL image, got {type(image).__name__}")
    path = _existing(image, "image")
    try:
        return load_image(path, size)
    except Exception as exc:  # noqa: BLE001 - any decoding failure names the file
        raise InputError(f"cannot read image file {path}: {type(exc).__name__}: {exc}") from exc


def _existing(path: str | Path, what: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"{what} file not found: {path}")
    return path


def _source_name(x: Any) -> str | None:
    if x is None:
        return None
    if isinstance(x, (str, Path)):
        return str(x)
    return "<PIL image>" if isinstance(x, Image.Image) else "<waveform>"


def list_inputs(path: str | Path) -> list[tuple[Path | None, Path | None]]:
    """``(audio, image)`` pairs from a folder (paired by file stem; a stem with one modality gets None for the
    other) or from a CSV with columns ``audio,image`` (either cell may be empty; relative paths are relative
    to the CSV's folder)."""
    path = Path(path).expanduser()
    if path.is_dir():
        return _pairs_from_folder(path)
    if path.is_file() and path.suffix.lower() == ".csv":
        return _pairs_from_csv(path)
    raise InputError(f"inputs={path}: not a folder or a .csv file")


def _pairs_from_folder(folder: Path) -> list[tuple[Path | None, Path | None]]:
    found: dict[str, dict[str, Path]] = {}
    for f in sorted(folder.iterdir()):
        if f.name.startswith(".") or not f.is_file():
            continue
        suffix = f.suffix.lower()
        kind = "audio" if suffix in AUDIO_SUFFIXES else "image" if suffix in IMAGE_SUFFIXES else None
        if kind is None:
            log.info("ignoring %s (neither audio %s nor image %s)", f, AUDIO_SUFFIXES, IMAGE_SUFFIXES)
            continue
        slot = found.setdefault(f.stem, {})
        if kind in slot:
            raise InputError(f"two {kind} files for {f.stem}: {slot[kind]} and {f}")
        slot[kind] = f
    if not found:
        raise InputError(f"no audio ({'/'.join(AUDIO_SUFFIXES)}) or image files in {folder}")
    return [(slot.get("audio"), slot.get("image")) for _, slot in sorted(found.items())]


def _pairs_from_csv(path: Path) -> list[tuple[Path | None, Path | None]]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        columns = set(reader.fieldnames or ())
        if not {"audio", "image"} <= columns:
            raise InputError(f"{path}: needs the columns audio,image (found {sorted(columns)})")
        rows = list(reader)

    def resolve(cell: str | None) -> Path | None:
        cell = (cell or "").strip()
        if not cell:
            return None
        p = Path(cell).expanduser()
        return p if p.is_absolute() else path.parent / p

    pairs = []
    for line, row in enumerate(rows, start=2):
        pair = (resolve(row["audio"]), resolve(row["image"]))
        if pair == (None, None):
            raise InputError(f"{path}, line {line}: both audio and image are empty")
        pairs.append(pair)
    if not pairs:
        raise InputError(f"{path}: no rows")
    return pairs


def prediction_rows(predictions: Sequence[Prediction], top_k: int) -> list[dict[str, Any]]:
    """One flat dict per prediction (the columns of ``python -m uvav.predict inputs=... out=...``)."""
    rows = []
    for p in predictions:
        row: dict[str, Any] = {"audio": p.audio or "", "image": p.image or "", "missing": "+".join(p.missing),
                               "mode": p.mode, "case": p.case or "", "probability": p.probability}
        for i in range(top_k):
            name, prob = p.top[i] if i < len(p.top) else ("", "")
            row[f"class_{i + 1}"], row[f"prob_{i + 1}"] = name, (f"{prob:.6f}" if prob != "" else "")
        row["note"], row["error"] = p.note or "", p.error or ""
        rows.append(row)
    return rows
