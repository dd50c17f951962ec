"""Scoring a finished run again, without training (:meth:`uvav.api.Run.evaluate`): on its own test or
validation split, or under other noise or data with the same classes; the result says whether it reproduces the
run's own numbers (``matches_reference``) and can be saved beside the run (``<run>/evaluations/<name>.json``)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import OmegaConf

from uvav import preflight
from uvav.cases import EVAL_CASES, result_key
from uvav.config import EVALUATION_NEUTRAL, NoiseConfig
from uvav.data.base import AVSplit, MissingTable
from uvav.errors import InputError, safe_file_name
from uvav.outputs import atomic_write_json
from uvav.overrides import evaluation_name, override_items, split_overrides
from uvav.record import SCHEMA_VERSION

if TYPE_CHECKING:
    from uvav.api import Run

SPLITS = ("test", "val")


def evaluate_run(run: Run, case: str = "all", prompts: str = "uncertain", split: str = "test", *,
                 save: bool = False, name: str | None = None, missing_audio: float = 0.0, missing_visual: float = 0.0,
                 missing_seed: int = 0, **overrides: Any) -> dict[str, Any]:
    """Accuracy of the saved model, without training, as ``result['accuracy'][mode][case]``; for a multi-label
    run the same table holds mAP (``result['metric']``) and ``result['per_class_ap'][mode][case]`` each class's AP.

    ``case``: one of complete, noisy_audio, noisy_visual, noise_both, mixed, or ``all``; ``prompts``:
    uncertain, oracle or all (ignored by FT runs: mode ``ft``); ``split``: test or val. ``overrides``: as
    on the command line, dotted (``**{"noise.severity": 0.5}``) or nested (``noise={"severity": 0.5}``);
    ``data="av_mnist"`` switches to another dataset with the same classes. Device: ``load_run``'s unless
    ``trainer.device`` is given. With ``save=True`` the result is written to
    ``<run>/evaluations/<name>.json`` (never over ``metrics.json``). ``missing_audio``/``missing_visual`` > 0:
    the split under a per-sample missing table (:class:`uvav.data.base.MissingTable`, drawn from ``missing_seed``:
    the share of samples that lose their audio / image), scored under ``case=complete``.
    """
    safe_file_name(name, "name")  # a plain file name: written as <run>/evaluations/<name>.json
    from uvav.data import DATASETS, load_data
    from uvav.data.loading import LoaderOptions
    from uvav.runtime import autocast_for, select_device
    from uvav.train import SALTS, evaluate_split, oracle_available

    started = time.perf_counter()
    if split not in SPLITS:
        raise InputError(f"split={split!r}: one of {list(SPLITS)}")
    if case != "all" and case not in EVAL_CASES:
        raise InputError(f"case={case!r}: one of {[*EVAL_CASES, 'all']}")
    modes = run._prompt_modes(prompts)
    table = _missing_table(case, modes, missing_audio, missing_visual, missing_seed)
    cfg = run.eval_config(**overrides)
    _, flat = split_overrides(overrides)
    device = select_device(flat["trainer.device"]) if "trainer.device" in flat else run.device
    autocast = autocast_for(device, cfg.trainer.precision)
    torch.set_flush_denormal(True)  # as during the run (uvav.runtime.setup_runtime)
    _check_classes(run, cfg.data.name, DATASETS.get(cfg.data.name).class_names)
    stage = run._stage(device)
    cases = list(EVAL_CASES) if case == "all" else [case]
    if case != "all" and "oracle" in modes and not oracle_available(stage, case):
        raise InputError(f"no oracle prompts for case {case}: the run trained prompt sets for "
                         f"{list(run.bank.cases)}; use prompts=uncertain")
    with _threads(cfg.trainer.num_threads):
        data = load_data(cfg.data, str(cfg.data.cache_dir or Path(cfg.paths.cache_dir) / "features"))
        _check_classes(run, cfg.data.name, data.class_names)
        part, renormalized = _renormalize(getattr(data, split), data.info, run.normalization)
        if table:
            part = MissingTable(part, missing_audio, missing_visual, missing_seed)
            table.update(samples_without_audio=int(part.no_audio.sum()), samples_without_image=int(part.no_image.sum()))
        scores = evaluate_split(stage, part, NoiseConfig.of(cfg.noise), SALTS[split], modes, device,
                                preflight.eval_batch_size(cfg, device), autocast,
                                LoaderOptions.for_device(cfg.data.num_workers, device), cases,
                                progress=f"{run.method}: scoring {split}" if cfg.trainer.progress else None)
    accuracy = {result_key(run.method, mode): scores.values[mode] for mode in modes}
    reference = None if table else _reference(run, accuracy, split, overrides)
    label = run.method if run.bank is None else prompts
    result = {
        "schema_version": SCHEMA_VERSION, "kind": "evaluation", "run": str(run.path.resolve()),
        "method": run.method, "split": split, "case": case, "prompts": label, "modes": list(accuracy),
        "overrides": {k: v for k, v in override_items(overrides)}, "metric": scores.metric, "accuracy": accuracy,
        **({"per_class_ap": {result_key(run.method, m): scores.per_class[m] for m in modes}}
           if scores.per_class else {}),
        "num_samples": len(part), **({"missing_table": table} if table else {}), "reference": reference,
        "matches_reference": None if reference is None else reference == accuracy,
        "renormalized_audio": renormalized, "data": OmegaConf.to_container(cfg.data),
        "noise": OmegaConf.to_container(cfg.noise), "device": str(device),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "wall_time_s": round(time.perf_counter() - started, 3),
    }
    suffix = f"-missing_a{missing_audio:g}_v{missing_visual:g}_s{missing_seed}" if table else ""
    result["name"] = name or evaluation_name(split, case, label, overrides) + suffix
    if save:
        path = run.path / "evaluations" / f"{result['name']}.json"
        if path.resolve() == (run.path / "metrics.json").resolve():
            raise InputError("an evaluation never overwrites the run's metrics.json: choose another name")
        atomic_write_json(path, result)
        result["path"] = str(path)
    return result


def _missing_table(case: str, modes: list[str], audio: float, visual: float, seed: int) -> dict[str, Any] | None:
    """What the result records of a per-sample missing table (None without one); refuses what it cannot score."""
    if not (audio or visual):
        return None
    problem = MissingTable.rates_problem(audio, visual)
    if problem:  # refused before any work
        raise InputError(f"missing_audio={audio}, missing_visual={visual}: {problem}")
    if case != "complete":
        raise InputError(f"case={case}: a missing table is scored under case=complete (it says which samples lose "
                         "a modality; the other cases would corrupt them again)")
    if "oracle" in modes:
        raise InputError("prompts=oracle picks prompts by the case, which a missing table does not state: use "
                         "prompts=uncertain")
    return {"audio": audio, "visual": visual, "seed": seed,
            "definition": "sample i loses its audio if u_i < audio, its image if audio <= u_i < audio + visual; "
                          "u ~ U(0, 1) from the seed alone (uvav.data.base.MissingTable)"}


def _check_classes(run: Run, dataset: str, names: Any) -> None:
    if names is not None and list(names) != run.class_names:
        raise InputError(f"dataset {dataset} has classes {list(names)}; the run was trained on {run.class_names}")


def _reference(run: Run, accuracy: dict[str, Any], split: str, overrides: dict[str, Any]) -> dict[str, Any] | None:
    """The run's own numbers for the evaluated modes and cases, when nothing that can change them was overridden
    (same data, same noise); else None."""
    _, flat = split_overrides(overrides)
    if any(k not in EVALUATION_NEUTRAL for k in (*flat, *(["data"] if "data" in overrides else []))):
        return None
    own = run.metrics.get("accuracy" if split == "test" else "val", {})
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
