"""Use a finished run: re-evaluate it under any case, or predict classes for audio/image files.

:func:`load_run` rebuilds a run's model exactly as it was trained, from the run folder alone:
``metrics.json`` (the resolved config, the normalisation statistics of the training split, the class names),
``model.pt`` (weights and prompt bank) and ``.hydra/config.yaml``. Inputs go through the same feature
pipeline as the training data (:mod:`uvav.data.features`): any sample rate, channel count and clip length,
any image PIL can read. A modality left out is *missing*: zeros after normalisation, exactly like the
``missing`` / ``black`` corruptions of :mod:`uvav.scenarios`.

Modes: ``ft`` (an FT run: no prompts), ``pl_uncertain`` (all prompt sets concatenated: the case is unknown)
and ``pl_oracle`` (each sample with its own case's prompt set).
"""

from __future__ import annotations

import contextlib
import csv
import logging
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from PIL import Image

from uvav.config import (
    EVAL_CASES,
    RESULT_NEUTRAL_KEYS,
    AVMnistDataConfig,
    CavmaeJsonDataConfig,
    ConfigError,
    NoiseConfig,
    PathsConfig,
    SyntheticDataConfig,
    TrainerConfig,
    UrbanSound8KAVDataConfig,
    config_dir,
    register_configs,
    validate,
)
from uvav.data.base import AVSplit
from uvav.outputs import SCHEMA_VERSION, atomic_write_json, fingerprint, read_json

log = logging.getLogger(__name__)

RUN_FILES = ("model.pt", "metrics.json", ".hydra/config.yaml")
MODE_KEYS = {"none": "ft", "uncertain": "pl_uncertain", "oracle": "pl_oracle"}
PROMPT_CHOICES = ("uncertain", "oracle", "all")
SPLITS = ("test", "val")
FEATURE_KEYS = ("target_length", "num_mel_bins", "image_size")
EVAL_TRAINER_KEYS = ("device", "precision", "eval_batch_size", "num_threads")
# overrides that cannot change an accuracy: left out of an evaluation's file name
_NAME_NEUTRAL = {*RESULT_NEUTRAL_KEYS, "trainer.device", "trainer.eval_batch_size", "paths.cache_dir"}
# config paths that a run resolved against the folder it was started from
_RELATIVE_PATHS = ("paths.cache_dir", "data.root", "data.cache_dir", "data.manifest", "data.metadata_csv")
DATA_SCHEMAS = {"synthetic": SyntheticDataConfig, "av_mnist": AVMnistDataConfig,
                "urbansound8k_av": UrbanSound8KAVDataConfig, "cavmae_json": CavmaeJsonDataConfig}
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class RunError(RuntimeError):
    """A run folder from which the model cannot be rebuilt (missing files, other schema, unusable config)."""


class InputError(ValueError):
    """An input that cannot be used: a missing or unreadable file, or a request the run cannot serve."""


@dataclass
class Prediction:
    """Top-k ``(class, probability)`` pairs for one input, and how they were obtained.

    ``mode``: ``ft`` (or ``lora``/``adapter``), ``pl_uncertain`` or ``pl_oracle``; ``case``: the case of the
    oracle prompt set; ``missing``: modalities left out (fed as zeros); ``error``: why this input was skipped.
    """

    top: list[tuple[str, float]]
    mode: str
    case: str | None = None
    missing: tuple[str, ...] = ()
    audio: str | None = None
    image: str | None = None
    note: str | None = None
    error: str | None = None

    @property
    def label(self) -> str | None:
        return self.top[0][0] if self.top else None

    def __str__(self) -> str:
        if self.error:
            return f"error: {self.error}"
        cells = ", ".join(f"{name} {prob:.3f}" for name, prob in self.top)
        return f"{cells} [{describe_mode(self.mode, self.case)}]"


def describe_mode(mode: str, case: str | None = None) -> str:
    """One line saying what an inference mode means."""
    return {
        "ft": "ft: fine-tuned model, no prompts",
        "lora": "lora: frozen FT model with LoRA updates, no prompts",
        "adapter": "adapter: frozen FT model with bottleneck adapters, no prompts",
        "pl_uncertain": "pl_uncertain: all prompt sets concatenated (the case is unknown)",
        "pl_oracle": f"pl_oracle: the prompt set of case {case}" if case else "pl_oracle: each case its own prompt set",
    }.get(mode, mode)


# ---------------------------------------------------------------- loading
def load_run(path: str | Path, device: str | None = None) -> Run:
    """Rebuild a finished run (``python -m uvav.run`` job folder) for evaluation and prediction.

    ``device``: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``; default: the run's ``trainer.device``.
    Raises :class:`RunError` naming what is missing or incompatible.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise RunError(f"run folder {root} does not exist (expected a `python -m uvav.run` job folder)")
    missing = [name for name in RUN_FILES if not (root / name).is_file()]
    if missing:
        raise RunError(f"{root} is not a complete uvav run: missing {', '.join(missing)}; the model cannot be "
                       "rebuilt without them (a job writes model.pt and metrics.json when it finishes)")
    metrics = read_json(root / "metrics.json")
    if metrics is None:
        raise RunError(f"{root / 'metrics.json'} is unreadable or partial: the model cannot be rebuilt")
    version = metrics.get("schema_version")
    if version != SCHEMA_VERSION:
        raise RunError(f"{root / 'metrics.json'} has schema_version {version!r}, this uvav reads version "
                       f"{SCHEMA_VERSION}: the run cannot be rebuilt with this version")
    if metrics.get("status") != "completed":
        raise RunError(f"{root} did not complete (status {metrics.get('status')!r}): nothing to rebuild")
    config = metrics.get("config") or OmegaConf.to_container(OmegaConf.load(root / ".hydra/config.yaml"),
                                                             resolve=True)
    cfg = _absolutize(OmegaConf.create(config), _run_cwd(root))
    try:
        checkpoint = torch.load(root / "model.pt", map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint
        raise RunError(f"{root / 'model.pt'} is unreadable ({type(exc).__name__}: {exc})") from exc
    absent = [k for k in ("model", "bank", "class_names") if k not in checkpoint]
    if absent:
        raise RunError(f"{root / 'model.pt'} lacks {absent}: not a uvav run checkpoint, cannot rebuild")
    return Run(root, cfg, metrics, checkpoint, device)


def _run_cwd(root: Path) -> Path | None:
    """The folder the run was started from (``.hydra/hydra.yaml``), against which it resolved relative paths."""
    try:
        cwd = OmegaConf.load(root / ".hydra" / "hydra.yaml").hydra.runtime.cwd
    except Exception:  # noqa: BLE001 - absent or unusual: relative paths stay relative to the current folder
        return None
    return Path(cwd) if cwd else None


def _absolutize(cfg: DictConfig, cwd: Path | None) -> DictConfig:
    if cwd is None:
        return cfg
    for key in _RELATIVE_PATHS:
        value = OmegaConf.select(cfg, key, default=None)
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            OmegaConf.update(cfg, key, str(cwd / value), merge=False)
    return cfg


# ---------------------------------------------------------------- the run
class Run:
    """A finished run, rebuilt: ``.config``, ``.metrics``, ``.class_names``, ``.evaluate()``, ``.predict()``."""

    def __init__(self, path: Path, config: DictConfig, metrics: dict[str, Any], checkpoint: dict[str, Any],
                 device: str | None = None) -> None:
        from uvav.models.classifier import AVClassifier
        from uvav.models.prompts import PromptBank
        from uvav.pipeline import select_device

        self.path = path
        self.config = config
        OmegaConf.set_readonly(self.config, True)
        self.metrics = metrics
        self.class_names: list[str] = list(checkpoint["class_names"])
        self.method: str = config.method.name
        self.device = select_device(device or config.trainer.device)
        self.normalization = self._normalization()
        try:
            self.model = AVClassifier.from_config(config.backbone, config.data, len(self.class_names))
            if self.method not in ("ft", "pl"):  # parameter-efficient baselines: their layers come first
                from uvav.models.peft import build_peft_model

                self.model = build_peft_model(self.model, config.method)
            self.model.load_state_dict(checkpoint["model"])
            self.bank = None
            if checkpoint["bank"] is not None:
                self.bank = PromptBank.from_config(config)
                self.bank.load_state_dict(checkpoint["bank"])
        except (ImportError, RuntimeError, ValueError, KeyError, OmegaConfBaseException) as exc:
            raise RunError(f"{path / 'model.pt'} does not fit the model described by the run's config: "
                           f"{exc}") from exc
        if (self.bank is None) == (self.method == "pl"):
            has = "lacks" if self.bank is None else "has"
            raise RunError(f"{path}: method {self.method!r} but the checkpoint {has} a prompt bank")
        for module in (self.model, self.bank):
            if module is not None:
                module.requires_grad_(False)
                module.eval()
                module.to(self.device)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, method={self.method!r}, data={self.config.data.name!r})"

    @property
    def modes(self) -> list[str]:
        """The inference modes this run has (keys of ``metrics['accuracy']``)."""
        return [self._mode_key("none")] if self.bank is None else ["pl_uncertain", "pl_oracle"]

    def _mode_key(self, mode: str) -> str:
        """Prompt mode -> result key: ``pl_uncertain``/``pl_oracle``; without prompts the method (ft, lora, ...)."""
        return self.method if mode == "none" else MODE_KEYS[mode]

    def _normalization(self) -> dict[str, Any] | None:
        """The training split's audio statistics; None for synthetic data (generated already normalised)."""
        if self.config.data.name == "synthetic":
            return None
        norm = (self.metrics.get("data_info") or {}).get("normalization") or {}
        if not {"audio_mean", "audio_std"} <= set(norm):
            raise RunError(f"{self.path / 'metrics.json'}: data_info has no normalisation statistics "
                           f"(normalization.audio_mean / audio_std) for this {self.config.data.name} run, so its "
                           "feature pipeline cannot be rebuilt; re-run the job with this uvav version")
        if norm.get("visual", "imagenet") != "imagenet":
            raise RunError(f"{self.path}: image normalisation {norm['visual']!r} is not supported (imagenet only)")
        return dict(norm)

    def _stage(self, device: torch.device):
        from uvav.train import Stage

        if device != self.device:
            for module in (self.model, self.bank):
                if module is not None:
                    module.to(device)
            self.device = device
        cases = list(self.config.scenario.train_cases)
        return Stage("eval", self.model, self.bank, "none", ["none"], cases, 0, 0.0, 0.0)

    def _prompt_modes(self, prompts: str) -> list[str]:
        if prompts not in (*PROMPT_CHOICES, "none"):
            raise InputError(f"prompts={prompts!r}: one of {list(PROMPT_CHOICES)}")
        if self.bank is None:
            return ["none"]  # FT (and LoRA/adapter) runs have no prompts
        if prompts == "none":
            raise InputError("prompts=none: a PL run is evaluated with prompts (uncertain, oracle or all)")
        return ["uncertain", "oracle"] if prompts == "all" else [prompts]

    # ------------------------------------------------------------ evaluation
    def eval_config(self, **overrides: Any) -> DictConfig:
        """The run's config with evaluation overrides applied and checked (see :meth:`evaluate`)."""
        choice, flat = split_overrides(overrides)
        cfg = OmegaConf.to_container(self.config, resolve=True)
        try:
            if choice is None:
                data = OmegaConf.merge(OmegaConf.structured(_data_schema(self.config.data.name)), cfg["data"])
            else:
                data = compose_data_group(choice)
                for key in FEATURE_KEYS:  # the model was built for the run's feature shapes
                    data[key] = self.config.data[key]
            sections = {"data": data, "noise": OmegaConf.merge(OmegaConf.structured(NoiseConfig), cfg["noise"]),
                        "trainer": OmegaConf.merge(OmegaConf.structured(TrainerConfig), cfg["trainer"]),
                        "paths": OmegaConf.merge(OmegaConf.structured(PathsConfig), cfg["paths"])}
        except OmegaConfBaseException as exc:
            raise RunError(f"{self.path}: the run's config does not fit this uvav version's schema: {exc}") from exc
        for key, value in flat.items():
            section, _, rest = key.partition(".")
            allowed = ((section in ("data", "noise") and rest) or (section == "trainer" and rest in EVAL_TRAINER_KEYS)
                       or key == "paths.cache_dir")
            if not allowed:
                raise InputError(
                    f"cannot override {key!r} when evaluating a trained run (the model is fixed); allowed: "
                    f"data=<dataset>, data.<key>, noise.<key>, trainer.{{{','.join(EVAL_TRAINER_KEYS)}}}, "
                    "paths.cache_dir")
            try:
                OmegaConf.update(sections[section], rest, value, merge=True)
            except OmegaConfBaseException as exc:
                raise InputError(f"override {key}={value!r}: {exc}") from exc
        for key in FEATURE_KEYS:
            if sections["data"][key] != self.config.data[key]:
                raise InputError(f"data.{key}={sections['data'][key]}: the model was built for "
                                 f"data.{key}={self.config.data[key]} and cannot take other features")
        out = OmegaConf.create({**cfg, **{k: OmegaConf.to_container(v, resolve=True) for k, v in sections.items()}})
        try:
            validate(out)
        except ConfigError as exc:
            raise InputError(str(exc)) from exc
        return out

    def evaluate(self, case: str = "all", prompts: str = "uncertain", split: str = "test", *, save: bool = False,
                 name: str | None = None, **overrides: Any) -> dict[str, Any]:
        """Accuracy of the saved model, without training, as ``result['accuracy'][mode][case]``.

        ``case``: one of complete, noisy_audio, noisy_visual, noise_both, mixed, or ``all``; ``prompts``:
        uncertain, oracle or all (ignored by FT runs: mode ``ft``); ``split``: test or val. ``overrides``: as
        on the command line, dotted (``**{"noise.severity": 0.5}``) or nested (``noise={"severity": 0.5}``);
        ``data="av_mnist"`` switches to another dataset with the same classes. Device: ``load_run``'s unless
        ``trainer.device`` is given. With ``save=True`` the result is written to
        ``<run>/evaluations/<name>.json`` (never over ``metrics.json``).
        """
        from uvav.data import load_data
        from uvav.data.loading import LoaderOptions
        from uvav.evaluation import SALTS, evaluate_split, oracle_available
        from uvav.pipeline import autocast_for, select_device
        from uvav.scenarios import Noise

        started = time.perf_counter()
        if split not in SPLITS:
            raise InputError(f"split={split!r}: one of {list(SPLITS)}")
        if case != "all" and case not in EVAL_CASES:
            raise InputError(f"case={case!r}: one of {[*EVAL_CASES, 'all']}")
        modes = self._prompt_modes(prompts)
        cfg = self.eval_config(**overrides)
        _, flat = split_overrides(overrides)
        device = select_device(flat["trainer.device"]) if "trainer.device" in flat else self.device
        autocast = autocast_for(device, cfg.trainer.precision)
        torch.set_flush_denormal(True)  # as during the run (uvav.pipeline.setup_runtime)
        known = _dataset_classes(cfg.data.name)
        if known is not None and known != self.class_names:
            raise InputError(f"dataset {cfg.data.name} has classes {known}; the run was trained on {self.class_names}")
        stage = self._stage(device)
        cases = list(EVAL_CASES) if case == "all" else [case]
        if case != "all" and "oracle" in modes and not oracle_available(stage, case):
            raise InputError(f"no oracle prompts for case {case}: the run trained prompt sets for "
                             f"{list(self.bank.cases)}; use prompts=uncertain")
        with _threads(cfg.trainer.num_threads):
            data = load_data(cfg.data, str(cfg.data.cache_dir or Path(cfg.paths.cache_dir) / "features"))
            if data.class_names != self.class_names:
                raise InputError(f"dataset {cfg.data.name} has classes {data.class_names}; the run was trained on "
                                 f"{self.class_names}")
            part, renormalized = self._renormalize(getattr(data, split), data.info)
            scores = evaluate_split(stage, part, Noise.from_config(cfg.noise), SALTS[split], modes, device,
                                    cfg.trainer.eval_batch_size, autocast,
                                    LoaderOptions.for_device(cfg.data.num_workers, device), cases)
        accuracy = {self._mode_key(mode): scores[mode] for mode in modes}
        changes = sorted(k for k in (*flat, *(["data"] if "data" in overrides else [])) if k not in _NAME_NEUTRAL)
        reference = None
        if not changes:  # same data, same noise: the run's own numbers apply
            own = self.metrics.get("accuracy" if split == "test" else "val", {})
            reference = {m: {c: own[m][c] for c in accuracy[m] if c in own.get(m, {})} for m in accuracy
                         if m in own}
        label = self.method if self.bank is None else prompts
        result = {
            "schema_version": SCHEMA_VERSION, "kind": "evaluation", "run": str(self.path.resolve()),
            "method": self.method, "split": split, "case": case, "prompts": label, "modes": list(accuracy),
            "overrides": {k: v for k, v in _override_items(overrides)}, "accuracy": accuracy,
            "num_samples": len(part), "reference": reference,
            "matches_reference": None if reference is None else reference == accuracy,
            "renormalized_audio": renormalized, "data": OmegaConf.to_container(cfg.data),
            "noise": OmegaConf.to_container(cfg.noise), "device": str(device),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "wall_time_s": round(time.perf_counter() - started, 3),
        }
        result["name"] = name or evaluation_name(split, case, label, overrides)
        if save:
            path = self.path / "evaluations" / f"{result['name']}.json"
            if path.resolve() == (self.path / "metrics.json").resolve():
                raise InputError("an evaluation never overwrites the run's metrics.json: choose another name")
            atomic_write_json(path, result)
            result["path"] = str(path)
        return result

    def _renormalize(self, part: AVSplit, info: dict[str, Any]) -> tuple[AVSplit, bool]:
        """Normalise audio with the run's training-split statistics when the data's own differ."""
        if self.normalization is None:
            return part, False
        norm = info.get("normalization") or {}
        mean, std = norm.get("audio_mean"), norm.get("audio_std")
        if mean is None or std is None:
            raise InputError("the evaluation data records no normalisation statistics: cannot match the run's")
        run_mean, run_std = self.normalization["audio_mean"], self.normalization["audio_std"]
        if (mean, std) == (run_mean, run_std):
            return part, False
        return part.with_audio_normalization(run_mean, run_std), True

    # ------------------------------------------------------------ prediction
    def features(self, audio: Any = None, image: Any = None, sample_rate: int | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
        """Normalised model inputs ``([T, F] fbank, [3, S, S] image, missing modalities)`` for one sample."""
        self._check_predictable()
        from uvav.data.features import images_to_float

        if audio is None and image is None:
            raise InputError("nothing to predict from: give audio=, image= or both")
        data = self.config.data
        missing = tuple(m for m, x in (("audio", audio), ("image", image)) if x is None)
        if audio is None:
            fb = torch.zeros(data.target_length, data.num_mel_bins)
        else:
            fb = self._fbank(audio, sample_rate).sub_(self.normalization["audio_mean"])
            fb = fb.div_(self.normalization["audio_std"])
        if image is None:
            visual = torch.zeros(3, data.image_size, data.image_size)
        else:
            visual = images_to_float(self._image(image)[None])[0]
        return fb, visual, missing

    def predict(self, audio: Any = None, image: Any = None, top_k: int = 3, prompts: str = "uncertain",
                sample_rate: int | None = None) -> Prediction:
        """Top-k classes for one sample. ``audio``: a file path, a waveform (tensor or array, ``[samples]`` or
        ``[channels, samples]``) with ``sample_rate``, or a ``(waveform, sample_rate)`` tuple. ``image``: a
        file path or a PIL image. Leave one out to treat it as missing. ``prompts``: ``uncertain`` (PL
        default: the case is unknown) or ``oracle`` (the case implied by which modality is missing, when the
        run trained a prompt set for it; otherwise uncertain, said in ``note``). FT runs use no prompts."""
        if sample_rate is not None and audio is not None and not isinstance(audio, (str, Path)):
            audio = (audio, sample_rate)
        return self.predict_many([(audio, image)], top_k=top_k, prompts=prompts)[0]

    def predict_many(self, items: Iterable[tuple[Any, Any]], top_k: int = 3, prompts: str = "uncertain",
                     batch_size: int = 32, on_error: str = "raise") -> list[Prediction]:
        """:meth:`predict` for many ``(audio, image)`` pairs (either may be None), in batches.

        ``on_error="skip"``: an unreadable input gives a :class:`Prediction` with ``error`` set instead of
        raising."""
        from uvav.pipeline import autocast_for

        self._check_predictable()
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
                fb, visual, missing = self.features(audio, image)
            except InputError as exc:
                if on_error == "raise":
                    raise
                results.append(Prediction([], "", None, (), *names, error=str(exc)))
                continue
            mode, case, note = self._predict_mode(prompts, missing)
            results.append(Prediction([], self._mode_key(mode), case, missing, *names, note=note))
            pending.setdefault((mode, case), []).append((len(results) - 1, fb, visual))
        stage = self._stage(self.device)
        autocast = autocast_for(self.device, self.config.trainer.precision)
        k = min(top_k, len(self.class_names))
        for (mode, case), rows in pending.items():
            for start in range(0, len(rows), batch_size):
                chunk = rows[start:start + batch_size]
                probs = self._probabilities(stage, torch.stack([r[1] for r in chunk]),
                                            torch.stack([r[2] for r in chunk]), mode, case, autocast)
                values, index = probs.topk(k, dim=1)
                for (i, _, _), v, ix in zip(chunk, values.tolist(), index.tolist(), strict=True):
                    results[i].top = [(self.class_names[j], float(p)) for j, p in zip(ix, v, strict=True)]
        return results  # type: ignore[return-value]

    @torch.inference_mode()
    def _probabilities(self, stage, audio: torch.Tensor, visual: torch.Tensor, mode: str, case: str | None,
                       autocast) -> torch.Tensor:
        from uvav.scenarios import CASE_INDEX
        from uvav.train import logits_for

        case_ids = torch.full((audio.shape[0],), CASE_INDEX[case] if case else 0, dtype=torch.long)
        with autocast():
            logits = logits_for(stage, audio.to(self.device), visual.to(self.device), case_ids, mode)
        return logits.float().softmax(dim=1).cpu()

    def _predict_mode(self, prompts: str, missing: tuple[str, ...]) -> tuple[str, str | None, str | None]:
        """(prompt mode, oracle case, note). The case implied by a missing modality is the one whose
        corruptions include making it missing: audio -> noisy_audio, image -> noisy_visual."""
        if self.bank is None:
            return "none", None, (f"a {self.method} run has no prompts" if prompts == "oracle" else None)
        if prompts == "uncertain":
            return "uncertain", None, None
        case = "complete" if not missing else ("noisy_audio" if missing == ("audio",) else "noisy_visual")
        if case in self.bank.cases:
            return "oracle", case, None
        return "uncertain", None, f"no prompt set trained for case {case} (trained: {list(self.bank.cases)})"

    def _check_predictable(self) -> None:
        if self.config.data.name == "synthetic":
            raise RunError(f"{self.path} was trained on the synthetic dataset, whose features are generated in "
                           "code, not decoded from audio or image files: predicting from files makes no sense "
                           "for it. Use .evaluate() (python -m uvav.evaluate), or a run on av_mnist or "
                           "urbansound8k_av.")

    def _fbank(self, audio: Any, sample_rate: int | None) -> torch.Tensor:
        from uvav.data.features import audio_features, fbank, to_mono_16k

        data = self.config.data
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

    def _image(self, image: Any) -> torch.Tensor:
        from uvav.data.features import image_to_uint8, load_image

        size = self.config.data.image_size
        if isinstance(image, Image.Image):
            return image_to_uint8(image, size)
        if not isinstance(image, (str, Path)):
            raise InputError(f"image must be a file path or a PIL image, got {type(image).__name__}")
        path = _existing(image, "image")
        try:
            return load_image(path, size)
        except Exception as exc:  # noqa: BLE001 - any decoding failure names the file
            raise InputError(f"cannot read image file {path}: {type(exc).__name__}: {exc}") from exc


# ---------------------------------------------------------------- helpers
def split_overrides(overrides: Mapping[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """``(data group choice or None, {dotted key: value})`` from dotted or nested overrides."""
    choice, flat = None, {}
    for key, value in _override_items(overrides):
        if key == "data":
            choice = str(value)
        else:
            flat[key] = value
    return choice, flat


def _override_items(overrides: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in overrides.items():
        full = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _override_items(value, f"{full}.")
        elif full == "data" and not isinstance(value, str):
            raise InputError(f"data={value!r}: a dataset name (data=av_mnist) or a mapping of data keys")
        else:
            yield full, value


def evaluation_name(split: str, case: str, prompts: str, overrides: Mapping[str, Any]) -> str:
    """``<split>-<case>-<prompts>[-<key=value,...>]``, file-name safe; long names end in a hash."""
    parts = sorted(f"{k}={_compact(v)}" for k, v in _override_items(overrides) if k not in _NAME_NEUTRAL)
    name = "-".join([split, case, prompts, *([",".join(parts)] if parts else [])])
    name = re.sub(r"[^A-Za-z0-9._=,+-]+", "_", name)
    return name if len(name) <= 120 else f"{name[:100]}-{fingerprint(name)[:12]}"


def _compact(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_compact(v) for v in value) + "]"
    return str(value)


def _data_schema(name: str) -> type:
    if name not in DATA_SCHEMAS:
        raise RunError(f"dataset {name!r} is not known to this uvav version ({sorted(DATA_SCHEMAS)})")
    return DATA_SCHEMAS[name]


def _dataset_classes(name: str) -> list[str] | None:
    """A dataset's class names without loading it (None for an unknown dataset)."""
    import importlib

    module = {"synthetic": "uvav.data.synthetic", "av_mnist": "uvav.data.av_mnist",
              "urbansound8k_av": "uvav.data.urbansound8k_av"}.get(name)
    return list(importlib.import_module(module).CLASS_NAMES) if module else None


def compose_data_group(choice: str) -> DictConfig:
    """The ``data`` node of ``conf/config.yaml`` composed with ``data=<choice>`` (Hydra's own composition,
    also when called inside another Hydra app)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    register_configs()
    gh = GlobalHydra.instance()
    outer = gh.hydra if gh.is_initialized() else None
    gh.clear()
    try:
        with initialize_config_dir(config_dir(), version_base="1.3"):
            return compose("config", overrides=[f"data={choice}"]).data
    except HydraException as exc:
        raise InputError(f"data={choice}: {exc}") from exc
    finally:
        if outer is not None:
            GlobalHydra.instance().hydra = outer


@contextlib.contextmanager
def _threads(count: int | None) -> Iterator[None]:
    before = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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


# ---------------------------------------------------------------- many inputs
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
                               "mode": p.mode, "case": p.case or ""}
        for i in range(top_k):
            name, prob = p.top[i] if i < len(p.top) else ("", "")
            row[f"class_{i + 1}"], row[f"prob_{i + 1}"] = name, (f"{prob:.6f}" if prob != "" else "")
        row["note"], row["error"] = p.note or "", p.error or ""
        rows.append(row)
    return rows


__all__ = ["InputError", "Prediction", "Run", "RunError", "list_inputs", "load_run", "prediction_rows"]
