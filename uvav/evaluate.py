"""``python -m uvav.evaluate run=<run dir> [case=...] [prompts=...] [split=...] [overrides ...]``.

Rebuilds a finished run's model (:func:`uvav.api.load_run`), evaluates it without training, writes
``<run>/evaluations/<name>.json`` atomically (never ``metrics.json``) and prints a table. Config:
``conf/evaluate.yaml``. Hydra writes nothing beside the run or in the current folder (no ``.hydra/``, no
log file; logs go to stderr); a ``-m`` sweep leaves its ``multirun.yaml`` under
``$TMPDIR/uvav_evaluate_sweeps/``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import MISSING, DictConfig, OmegaConf

from uvav.api import InputError, load_run
from uvav.checks import register_configs
from uvav.config import NoiseConfig, PathsConfig, TrainerConfig, config_dir
from uvav.errors import report_user_errors, run_entrypoint, safe_file_name
from uvav.methods import describe_result

log = logging.getLogger("uvav.evaluate")
OWN_KEYS = ("run", "case", "prompts", "split", "name", "missing_audio", "missing_visual", "missing_seed")


@dataclass
class EvaluateConfig:
    """``conf/evaluate.yaml``'s schema. ``data``/``noise``/``trainer``/``paths`` only carry overrides of the
    run's own config; what is allowed is checked by :meth:`uvav.api.Run.eval_config`."""

    run: str = MISSING
    case: str = "all"
    prompts: str = "all"
    split: str = "test"
    name: str | None = None
    missing_audio: float = 0.0  # share of samples that lose their audio (a per-sample missing table; case=complete)
    missing_visual: float = 0.0  # share that lose their image
    missing_seed: int = 0  # draws the table
    data: Any = None
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)


def register() -> None:
    register_configs()
    cs = ConfigStore.instance()
    cs.store(name="evaluate_schema", node=EvaluateConfig)
    open_node = OmegaConf.create({})
    OmegaConf.set_struct(open_node, False)  # any data.<key>: checked later against the run's data schema
    cs.store(group="data", name="from_run", node=open_node)


register()


def task_overrides() -> dict[str, Any]:
    """The command line's overrides of the run's config (everything but evaluate's own keys), as values."""
    parsed = OverridesParser.create().parse_overrides(list(HydraConfig.get().overrides.task))
    out: dict[str, Any] = {}
    for o in parsed:
        key = o.key_or_group
        if key in OWN_KEYS:
            continue
        if o.is_delete():
            raise InputError(f"~{key}: deleting keys of the run's config is not supported")
        if key == "data" and o.value() == "from_run":
            continue
        out[key] = o.value()
    return out


def format_table(result: dict[str, Any]) -> str:
    """Cases as rows, modes as columns; the run's own number beside each where it applies."""
    modes = list(result["accuracy"])
    cases = list(dict.fromkeys(c for m in modes for c in result["accuracy"][m]))
    ref = result.get("reference") or {}
    head = "".join(f"{m:>14}" + (f"{'(run)':>8}" if m in ref else "") for m in modes)
    lines = [f"{result['split']} {result.get('metric', 'accuracy')}, {result['num_samples']} samples: {result['run']}",
             *(f"  {describe_result(m)}" for m in modes), f"{'case':<14}{head}"]
    for case in cases:
        cells = ""
        for m in modes:
            acc = result["accuracy"][m].get(case)
            cells += f"{acc:>14.4f}" if acc is not None else f"{'-':>14}"
            if m in ref:
                run_acc = ref[m].get(case)
                cells += f"{run_acc:>8.4f}" if run_acc is not None else f"{'-':>8}"
        lines.append(f"{case:<14}{cells}")
    if result.get("overrides"):
        lines.append("overrides: " + " ".join(f"{k}={v}" for k, v in result["overrides"].items()))
    if result.get("path"):
        lines.append(f"written to {result['path']}")
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="evaluate")
@report_user_errors  # a user error: one line `uvav: ...`, exit 2 (uvav/errors.py)
def main(cfg: DictConfig) -> float:
    if OmegaConf.is_missing(cfg, "run"):
        raise InputError("run=<run dir> is required: the job folder of `python -m uvav.run` to evaluate")
    safe_file_name(cfg.name, "name")  # refused before any work: written as <run>/evaluations/<name>.json
    run = load_run(cfg.run)
    result = run.evaluate(case=cfg.case, prompts=cfg.prompts, split=cfg.split, save=True, name=cfg.name,
                          missing_audio=cfg.missing_audio, missing_visual=cfg.missing_visual,
                          missing_seed=cfg.missing_seed, **task_overrides())
    print(format_table(result), flush=True)
    print("model made by: " + ", ".join(f"{k} {v}" for k, v in run.provenance.items()), flush=True)
    values = [v for per_case in result["accuracy"].values() for v in per_case.values()]
    return sum(values) / max(1, len(values))


if __name__ == "__main__":
    run_entrypoint(main)
