"""The comparison table, checked cell by cell against numbers computed here."""

from __future__ import annotations

import statistics

from uvav.compare import main
from uvav.outputs import atomic_write_json
from uvav.record import SCHEMA_VERSION

CASES = ["complete", "noisy_audio", "noisy_visual", "noise_both", "mixed"]


def job(root, name, method, seed, accuracy, training=None, stages=None):
    folder = root / name
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text("{}\n")
    config = {"method": {"name": method, **({"prompt_training": training} if training else {})}}
    accuracy = {"ft": {c: 0.1 for c in CASES}, **accuracy}  # every usable job has its FT model's row
    atomic_write_json(folder / "metrics.json", {
        "schema_version": SCHEMA_VERSION, "status": "completed", "method": method, "seed": seed, "config": config,
        "accuracy": accuracy, "stages": stages or {}, "device": "cpu", "objective": {"name": "val_acc", "value": 0.5}})


def test_comparison_cells(tmp_path):
    values = {}
    for seed in (0, 1, 2):
        acc = {c: 0.5 + 0.1 * seed + 0.01 * i for i, c in enumerate(CASES)}
        values.setdefault("lora", []).append(acc["noise_both"])
        job(tmp_path, f"lora{seed}", "lora", seed, {"ft": acc, "lora": acc},
            stages={"lora": {"params": {"trainable": 100}, "resources": {"time_per_epoch_s": 1.0 + seed,
                                                                          "peak_train_memory_bytes": 2**20}}})
        joint = {c: 0.9 - 0.05 * seed for c in CASES}
        job(tmp_path, f"joint{seed}", "pl", seed, {"pl_uncertain": joint}, training="joint")
    (tmp_path / "broken" / ".hydra").mkdir(parents=True)
    (tmp_path / "broken" / ".hydra" / "config.yaml").write_text("{}\n")
    (tmp_path / "broken" / "metrics.json").write_text('{"status": "comp')
    main([str(tmp_path), "--out", str(tmp_path / "out")])
    text = (tmp_path / "out" / "comparison.md").read_text()
    lora = values["lora"]
    assert f"{statistics.mean(lora):.3f} ± {statistics.stdev(lora):.3f} (n=3)" in text
    joint = [0.9, 0.85, 0.8]
    assert f"{statistics.mean(joint):.3f} ± {statistics.stdev(joint):.3f} (n=3)" in text
    assert "| LoRA | 100 ± 0 (n=3) | 1.0 ± 0.0 (n=3) | 2.000 ± 1.000 (n=3) |" in text
    assert "broken" in text  # listed as not completed, not silently dropped
    rows = (tmp_path / "out" / "comparison_accuracy.csv").read_text().splitlines()
    assert rows[0].startswith("Case,FT,LoRA,Adapter,Head only")


def test_one_mean_std_cell_for_every_table():
    """``uvav.reporting.formats``: the spread only with two values or more; signs for improvements; n optional."""
    from uvav.reporting.formats import MISSING_CELL, mean_std, mean_std_of

    assert mean_std_of([0.5, 0.7]) == "0.600 ± 0.141 (n=2)"
    assert mean_std_of([0.5]) == "0.500 (n=1)" and mean_std_of([]) == MISSING_CELL
    assert mean_std_of([1000, 1000], digits=0, show_n=False) == "1000 ± 0"
    assert mean_std(0.0125, float("nan"), 3, signed=True) == "+0.013 (n=3)"
