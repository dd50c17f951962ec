"""``python -m uvav.predict run=<run dir> audio=clip.wav image=frame.jpg [top_k=3] [prompts=uncertain]``.

Prints the top-k classes of one sample, which inference mode gave them and how the probabilities were made
(softmax; sigmoid, each class on its own, for a run on multi-label data). ``audio=`` or ``image=`` may be
left out: that modality is missing (zeros after normalisation). Many samples: ``inputs=<folder>`` (pairs by
file stem) or ``inputs=<list.csv>`` (columns ``audio,image``), written as CSV to ``out=<file.csv>`` (stdout
without ``out``). Config: ``conf/predict.yaml``; Hydra writes no files. Logic: :mod:`uvav.api`.
"""

from __future__ import annotations

import csv
import io
import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from uvav.api import InputError, Prediction, list_inputs, load_run, prediction_rows
from uvav.config import config_dir
from uvav.errors import report_user_errors, run_entrypoint
from uvav.methods import describe_result
from uvav.outputs import atomic_write_bytes

log = logging.getLogger("uvav.predict")


def format_one(pred: Prediction) -> str:
    """The prediction of one sample as a few readable lines."""
    given = [f"{kind}={src}" for kind, src in (("audio", pred.audio), ("image", pred.image)) if src]
    lines = [f"input: {' '.join(given)}" + (f" ({' and '.join(pred.missing)} missing: zeros)" if pred.missing else ""),
             f"mode: {describe_result(pred.mode, pred.case)}", f"probabilities: {pred.probability}"
             + (" (each class independently: multi-label run)" if pred.probability == "sigmoid" else "")]
    if pred.note:
        lines.append(f"note: {pred.note}")
    width = max(len(name) for name, _ in pred.top)
    lines += [f"{rank:>3}. {name:<{width}}  {prob:.4f}" for rank, (name, prob) in enumerate(pred.top, start=1)]
    return "\n".join(lines)


def to_csv(predictions: list[Prediction], top_k: int) -> str:
    rows = prediction_rows(predictions, top_k)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _predict(cfg: DictConfig) -> None:
    if OmegaConf.is_missing(cfg, "run"):
        raise InputError("run=<run dir> is required: the job folder of `python -m uvav.run` to predict with")
    if cfg.inputs is None and cfg.audio is None and cfg.image is None:
        raise InputError("nothing to predict from: give audio=..., image=... (or both), or inputs=<folder|csv>")
    if cfg.inputs is not None and (cfg.audio is not None or cfg.image is not None):
        raise InputError("give either inputs=<folder|csv> or audio=/image=, not both")
    if cfg.on_bad_file not in ("error", "skip"):
        raise InputError(f"on_bad_file={cfg.on_bad_file!r}: error or skip")
    run = load_run(cfg.run, device=cfg.device)
    if cfg.inputs is None:
        pred = run.predict(audio=cfg.audio, image=cfg.image, top_k=cfg.top_k, prompts=cfg.prompts)
        print(format_one(pred), flush=True)
        return
    pairs = list_inputs(cfg.inputs)
    preds = run.predict_many(pairs, top_k=cfg.top_k, prompts=cfg.prompts, batch_size=cfg.batch_size,
                             on_error="skip" if cfg.on_bad_file == "skip" else "raise")
    text = to_csv(preds, cfg.top_k)
    modes = sorted({p.mode for p in preds if not p.error})
    errors = sum(1 for p in preds if p.error)
    if cfg.out is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        atomic_write_bytes(Path(cfg.out).expanduser(), text.encode())
        for pred in preds:
            name = Path(pred.audio or pred.image or "?").stem
            print(f"{name:<24} {pred.error or f'{pred.label:<20} {pred.top[0][1]:.4f}  {pred.mode}'}")
    where = "stdout" if cfg.out is None else cfg.out
    log.info("%d inputs (%d skipped), mode %s: predictions written to %s", len(preds), errors,
             ", ".join(modes) or "-", where)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="predict")
@report_user_errors  # a user error: one line `uvav: ...`, exit 2 (uvav/errors.py)
def main(cfg: DictConfig) -> None:
    _predict(cfg)


if __name__ == "__main__":
    run_entrypoint(main)
