"""Use a finished run: re-evaluate it under any case, or predict classes for audio/image files.

:func:`load_run` rebuilds a run's model exactly as it was trained, from the run folder alone:
``metrics.json`` (the resolved config, the normalisation statistics of the training split, the class names),
``model.pt`` (weights and prompt bank) and ``.hydra/config.yaml``. The method's own layers come from its registry
entry (:meth:`uvav.methods.Method.prepare`). Evaluation overrides: :mod:`uvav.overrides`; prediction:
:mod:`uvav.inference`.

Modes (result keys): the method's name without prompts (``ft``, ``lora``, ``adapter``), and for a method with
prompts ``<method>_uncertain`` (all prompt sets concatenated: the case is unknown) and ``<method>_oracle`` (each
sample with its own case's prompt set).
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from uvav import inference
from uvav.cases import ACCURACY, MAP
from uvav.errors import InputError, RunError
from uvav.inference import Prediction, list_inputs, prediction_rows
from uvav.jobs import metrics_problem
from uvav.overrides import evaluation_config
from uvav.record import RecordError, read_record
from uvav.registry import UnknownNameError

log = logging.getLogger(__name__)

RUN_FILES = ("model.pt", "metrics.json", ".hydra/config.yaml")
PROMPT_CHOICES = ("uncertain", "oracle", "conditioned", "all")
SPLITS = ("test", "val")


# ---------------------------------------------------------------- loading
def load_run(path: str | Path, device: str | None = None) -> Run:
    """Rebuild a finished run (``python -m uvav.run`` job folder) for evaluation and prediction.

    ``device``: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``; default: the run's ``trainer.device``.
    Raises :class:`RunError` naming what is missing or incompatible.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise RunError(f"run={root}: the run folder does not exist (expected a `python -m uvav.run` job folder)")
    missing = [name for name in RUN_FILES if not (root / name).is_file()]
    if missing:
        raise RunError(f"run={root} is not a complete uvav run: missing {', '.join(missing)}; the model cannot be "
                       "rebuilt without them (a job writes model.pt and metrics.json when it finishes)")
    try:
        metrics = read_record(root / "metrics.json").to_dict()
    except RecordError as error:
        raise RunError(f"{root / 'metrics.json'} is unreadable or partial ({error}): the model cannot be "
                       "rebuilt") from error
    problem = metrics_problem(metrics)  # the one rule of a usable finished job (uvav.jobs)
    if problem:
        raise RunError(f"{root} is not a usable finished run ({problem}): the model cannot be rebuilt")
    config = metrics.get("config") or OmegaConf.to_container(OmegaConf.load(root / ".hydra/config.yaml"),
                                                             resolve=True)
    cfg = _absolutize(OmegaConf.create(config), _run_cwd(root))
    try:
        raw = (root / "model.pt").read_bytes()
        checkpoint = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint
        raise RunError(f"{root / 'model.pt'} is unreadable ({type(exc).__name__}: {exc})") from exc
    if metrics.get("model_sha256") and hashlib.sha256(raw).hexdigest() != metrics["model_sha256"]:
        log.warning("%s is not the model its metrics.json scored (its sha256 differs from model_sha256): the run's "
                    "own numbers do not describe these weights", root / "model.pt")
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
    """Resolve the run's relative paths (``paths.cache_dir``, ``data.cache_dir``, its dataset's path keys)."""
    from uvav.data import DATASETS

    if cwd is None:
        return cfg
    try:
        path_keys = DATASETS.get(cfg.data.name).path_keys
    except UnknownNameError as exc:
        raise RunError(str(exc)) from exc
    for key in ("paths.cache_dir", "data.cache_dir", *(f"data.{k}" for k in path_keys)):
        value = OmegaConf.select(cfg, key, default=None)
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            OmegaConf.update(cfg, key, str(cwd / value), merge=False)
    return cfg


def _provenance(checkpoint: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    """What made the run's model: the uvav commit (or version), torch's and timm's versions (from ``model.pt``;
    for a run made before models recorded it, from ``metrics.json``'s environment); the data's content digest
    and the model's sha256 recorded when the job finished."""
    made = checkpoint.get("provenance")
    if not isinstance(made, dict):
        env = metrics.get("environment") or {}
        versions = env.get("versions") or {}
        made = {"uvav": env.get("git_commit") or versions.get("uvav"), "torch": versions.get("torch"),
                "timm": versions.get("timm")}
    return {**made, "data_digest": metrics.get("data_digest"), "model_sha256": metrics.get("model_sha256")}


# ---------------------------------------------------------------- the run


class Run:
    """A finished run, rebuilt: ``.config``, ``.metrics``, ``.class_names``, ``.provenance``, ``.evaluate()``,
    ``.predict()``. It rebuilds the model and holds the run's state; scoring it again is :mod:`uvav.rescore`,
    predicting :mod:`uvav.inference`, evaluation overrides :mod:`uvav.overrides`."""

    def __init__(self, path: Path, config: DictConfig, metrics: dict[str, Any], checkpoint: dict[str, Any],
                 device: str | None = None) -> None:
        from uvav.data import DATASETS
        from uvav.methods import METHODS
        from uvav.models.classifier import AVClassifier
        from uvav.runtime import select_device

        try:  # the registry entries of the run's dataset and method
            self.dataset, self._entry = DATASETS.get(config.data.name), METHODS.get(config.method.name)
        except UnknownNameError as exc:
            raise RunError(f"{path}: {exc}") from exc
        self.path = path
        self.config = config
        OmegaConf.set_readonly(self.config, True)
        self.metrics = metrics
        self.provenance = _provenance(checkpoint, metrics)
        self.class_names: list[str] = list(checkpoint["class_names"])
        self.method: str = config.method.name
        self.device = select_device(device or config.trainer.device)
        self.normalization = self._normalization()
        try:
            self.model = AVClassifier.from_config(config.backbone, config.data, len(self.class_names))
            self.model = self._entry.prepare(self.model, config.method)  # the method's own layers (LoRA, ...)
            self.model.load_state_dict(checkpoint["model"])
            self.bank = None
            if checkpoint["bank"] is not None:
                self.bank = self._entry.bank(config)
                self.bank.load_state_dict(checkpoint["bank"])
        except (ImportError, RuntimeError, ValueError, KeyError, OmegaConfBaseException) as exc:
            raise RunError(f"{path / 'model.pt'} does not fit the model described by the run's config: "
                           f"{exc}") from exc
        if (self.bank is None) == self._entry.uses_prompts:
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
    def metric(self) -> str:
        """What the run's scores are: ``accuracy``, or ``mAP`` for a run on multi-label data (``metrics.json``)."""
        return self.metrics.get("metric", ACCURACY)

    @property
    def multi_label(self) -> bool:
        """True for a run on multi-label data: sigmoid outputs, scored in mAP."""
        return self.metric == MAP

    @property
    def modes(self) -> list[str]:
        """The inference modes this run has (keys of ``metrics['accuracy']``)."""
        return self._entry.result_keys

    def _normalization(self) -> dict[str, Any] | None:
        """The training split's audio statistics; None for generated data (already normalised)."""
        if not self.dataset.decoded:
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
        return Stage.trained(self.method, self.model, self.bank, list(self.config.scenario.train_cases),
                             eval_modes=self._entry.eval_modes)

    def _prompt_modes(self, prompts: str) -> list[str]:
        if prompts not in (*PROMPT_CHOICES, "none"):
            raise InputError(f"prompts={prompts!r}: one of {list(PROMPT_CHOICES)}")
        if self.bank is None:
            return ["none"]  # FT (and LoRA/adapter) runs have no prompts
        modes = list(self._entry.eval_modes)
        if prompts == "all":
            return modes
        if prompts == "uncertain" and modes == ["conditioned"]:
            return modes  # input-conditioned prompts are the case-unknown setting by construction
        if prompts not in modes:
            raise InputError(f"prompts={prompts!r}: this {self.method} run has prompt modes {modes} (or all)")
        return [prompts]

    # ------------------------------------------------------------ evaluation
    def evaluate(self, case: str = "all", prompts: str = "uncertain", split: str = "test", *, save: bool = False,
                 name: str | None = None, missing_audio: float = 0.0, missing_visual: float = 0.0,
                 missing_seed: int = 0, **overrides: Any) -> dict[str, Any]:
        """Accuracy of the saved model, without training, as ``result['accuracy'][mode][case]`` (mAP for a
        multi-label run): :func:`uvav.rescore.evaluate_run` says what each argument does."""
        from uvav.rescore import evaluate_run

        return evaluate_run(self, case, prompts, split, save=save, name=name, missing_audio=missing_audio,
                            missing_visual=missing_visual, missing_seed=missing_seed, **overrides)

    # ------------------------------------------------------------ prediction (uvav.inference)
    def features(self, audio: Any = None, image: Any = None, sample_rate: int | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
        """Normalised model inputs ``([T, F] fbank, [3, S, S] image, missing modalities)`` for one sample."""
        return inference.features(self, audio, image, sample_rate)

    def predict(self, audio: Any = None, image: Any = None, top_k: int = 3, prompts: str = "uncertain",
                sample_rate: int | None = None) -> Prediction:
        """Top-k classes for one sample (:func:`uvav.inference.predict` says what each argument takes)."""
        return inference.predict(self, audio, image, top_k, prompts, sample_rate)

    def predict_many(self, items: Iterable[tuple[Any, Any]], top_k: int = 3, prompts: str = "uncertain",
                     batch_size: int = 32, on_error: str = "raise") -> list[Prediction]:
        """:meth:`predict` for many ``(audio, image)`` pairs, in batches (:func:`uvav.inference.predict_many`)."""
        return inference.predict_many(self, items, top_k, prompts, batch_size, on_error)

    def eval_config(self, **overrides: Any) -> DictConfig:
        """The run's config with evaluation overrides applied and checked (see :meth:`evaluate`)."""
        return evaluation_config(self.config, self.path, overrides)


__all__ = ["InputError", "Prediction", "Run", "RunError", "list_inputs", "load_run", "prediction_rows"]
