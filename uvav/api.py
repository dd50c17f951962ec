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

import contextlib
import hashlib
import io
import logging
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from uvav.cases import ACCURACY, EVAL_CASES, MAP, result_key
from uvav.config import EVALUATION_NEUTRAL, NoiseConfig
from uvav.data.base import AVSplit
from uvav.errors import InputError, RunError, safe_file_name
from uvav.inference import Predicting, Prediction, list_inputs, prediction_rows
from uvav.jobs import metrics_problem
from uvav.outputs import atomic_write_json
from uvav.overrides import evaluation_config, evaluation_name, override_items, split_overrides
from uvav.record import SCHEMA_VERSION, RecordError, read_record
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


class Run(Predicting):
    """A finished run, rebuilt: ``.config``, ``.metrics``, ``.class_names``, ``.provenance``, ``.evaluate()``,
    ``.predict()``.

    Over 150 lines because it is the one public handle of a run: rebuilding (``__init__``) and evaluating
    (``evaluate``, the longest method, mostly its record) read the same state; prediction is in
    :class:`uvav.inference.Predicting`, evaluation overrides in :mod:`uvav.overrides`."""

    def __init__(self, path: Path, config: DictConfig, metrics: dict[str, Any], checkpoint: dict[str, Any],
                 device: str | None = None) -> None:
        from uvav.data import DATASETS
        from uvav.methods import METHODS
        from uvav.models.classifier import AVClassifier
        from uvav.pipeline import select_device

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
    def eval_config(self, **overrides: Any) -> DictConfig:
        """The run's config with evaluation overrides applied and checked (see :meth:`evaluate`)."""
        return evaluation_config(self.config, self.path, overrides)

    def evaluate(self, case: str = "all", prompts: str = "uncertain", split: str = "test", *, save: bool = False,
                 name: str | None = None, **overrides: Any) -> dict[str, Any]:
        """Accuracy of the saved model, without training, as ``result['accuracy'][mode][case]``; for a multi-label
        run the same table holds mAP (``result['metric']``) and ``result['per_class_ap'][mode][case]`` each class's AP.

        ``case``: one of complete, noisy_audio, noisy_visual, noise_both, mixed, or ``all``; ``prompts``:
        uncertain, oracle or all (ignored by FT runs: mode ``ft``); ``split``: test or val. ``overrides``: as
        on the command line, dotted (``**{"noise.severity": 0.5}``) or nested (``noise={"severity": 0.5}``);
        ``data="av_mnist"`` switches to another dataset with the same classes. Device: ``load_run``'s unless
        ``trainer.device`` is given. With ``save=True`` the result is written to
        ``<run>/evaluations/<name>.json`` (never over ``metrics.json``).
        """
        safe_file_name(name, "name")  # a plain file name: written as <run>/evaluations/<name>.json
        from uvav.data import DATASETS, load_data
        from uvav.data.loading import LoaderOptions
        from uvav.pipeline import autocast_for, select_device
        from uvav.train import SALTS, evaluate_split, oracle_available

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
        self._check_classes(cfg.data.name, DATASETS.get(cfg.data.name).class_names)
        stage = self._stage(device)
        cases = list(EVAL_CASES) if case == "all" else [case]
        if case != "all" and "oracle" in modes and not oracle_available(stage, case):
            raise InputError(f"no oracle prompts for case {case}: the run trained prompt sets for "
                             f"{list(self.bank.cases)}; use prompts=uncertain")
        with _threads(cfg.trainer.num_threads):
            data = load_data(cfg.data, str(cfg.data.cache_dir or Path(cfg.paths.cache_dir) / "features"))
            self._check_classes(cfg.data.name, data.class_names)
            part, renormalized = _renormalize(getattr(data, split), data.info, self.normalization)
            scores = evaluate_split(stage, part, NoiseConfig.of(cfg.noise), SALTS[split], modes, device,
                                    cfg.trainer.eval_batch_size, autocast,
                                    LoaderOptions.for_device(cfg.data.num_workers, device), cases)
        accuracy = {result_key(self.method, mode): scores.values[mode] for mode in modes}
        reference = self._reference(accuracy, split, overrides)
        label = self.method if self.bank is None else prompts
        result = {
            "schema_version": SCHEMA_VERSION, "kind": "evaluation", "run": str(self.path.resolve()),
            "method": self.method, "split": split, "case": case, "prompts": label, "modes": list(accuracy),
            "overrides": {k: v for k, v in override_items(overrides)}, "metric": scores.metric, "accuracy": accuracy,
            **({"per_class_ap": {result_key(self.method, m): scores.per_class[m] for m in modes}}
               if scores.per_class else {}),
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

    def _check_classes(self, dataset: str, names: Any) -> None:
        if names is not None and list(names) != self.class_names:
            raise InputError(f"dataset {dataset} has classes {list(names)}; the run was trained on {self.class_names}")

    def _reference(self, accuracy: dict[str, Any], split: str, overrides: dict[str, Any]) -> dict[str, Any] | None:
        """The run's own numbers for the evaluated modes and cases, when nothing that can change them was overridden
        (same data, same noise); else None."""
        _, flat = split_overrides(overrides)
        if any(k not in EVALUATION_NEUTRAL for k in (*flat, *(["data"] if "data" in overrides else []))):
            return None
        own = self.metrics.get("accuracy" if split == "test" else "val", {})
        return {m: {c: own[m][c] for c in accuracy[m] if c in own.get(m, {})} for m in accuracy if m in own}


def _renormalize(part: AVSplit, info: dict[str, Any], normalization: dict[str, Any] | None) -> tuple[AVSplit, bool]:
    """Normalise audio with the run's training-split statistics when the data's own differ."""
    if normalization is None:
        return part, False
    norm = info.get("normalization") or {}
    mean, std = norm.get("audio_mean"), norm.get("audio_std")
    if mean is None or std is None:
        raise InputError("the evaluation data records no normalisation statistics: cannot match the run's")
    run_mean, run_std = normalization["audio_mean"], normalization["audio_std"]
    if (mean, std) == (run_mean, run_std):
        return part, False
    return part.with_audio_normalization(run_mean, run_std), True


@contextlib.contextmanager
def _threads(count: int | None) -> Iterator[None]:
    before = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


__all__ = ["InputError", "Prediction", "Run", "RunError", "list_inputs", "load_run", "prediction_rows"]
