"""The registries: a method and a dataset added from outside uvav, one module and one YAML each, reach the runs,
``metrics.json``, the aggregated accuracy and resource tables, the comparison and ``load_run(...).evaluate()``
with no edit of uvav."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from uvav.registry import UnknownNameError

from .conftest import REPO, run_module

PLUGINS = "tests.plugins.gated_mlp,tests.plugins.blobs"
SEARCHPATH = f"hydra.searchpath=[file://{REPO / 'tests' / 'plugins' / 'conf'}]"
TINY = ["trainer.epochs=2", "frozen.epochs=2", "trainer.batch_size=24", "trainer.progress=false",
        "backbone.embed_dim=32", "backbone.num_heads=2", "backbone.depth=1", "backbone.patch_size=8",
        "backbone.image_patch_size=4", "data.num_workers=0", "method.cached_views=1"]


def _uvav(tmp_path: Path, module: str, *args: str) -> subprocess.CompletedProcess:
    return run_module(module, *args, cwd=tmp_path, env={"UVAV_PLUGINS": PLUGINS, "PYTHONPATH": str(REPO)},
                      timeout=600)


@pytest.mark.slow
def test_a_plugin_method_and_dataset_reach_every_table_and_load_run(tmp_path, monkeypatch):
    sweep = tmp_path / "sweep"
    _uvav(tmp_path, "uvav.run", "-m", "method=gated_mlp,lora", "data=blobs", "seed=0,1", SEARCHPATH, *TINY,
          f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={sweep}")
    jobs = sorted((p.parent for p in sweep.glob("*/metrics.json")), key=lambda p: int(p.name))
    metrics = [json.loads((job / "metrics.json").read_text()) for job in jobs]
    assert [m["method"] for m in metrics] == ["gated_mlp", "gated_mlp", "lora", "lora"]
    gated = metrics[0]
    assert set(gated["accuracy"]) == {"ft", "head_only", "gated_mlp"} and gated["main_mode"] == "gated_mlp"
    assert gated["class_names"] == ["low", "middle", "high"] and gated["config"]["data"]["name"] == "blobs"
    stage = gated["stages"]["gated_mlp"]
    assert stage["params"]["trainable"] < stage["params"]["total"] and stage["resources"]["time_per_epoch_s"] > 0
    assert gated["stages"]["ft"]["key"] == metrics[2]["stages"]["ft"]["key"]  # the same frozen base as LoRA

    _uvav(tmp_path, "uvav.aggregate", str(sweep), "--out", str(tmp_path / "tables"), "--no-plots")
    accuracy = (tmp_path / "tables" / "accuracy.md").read_text()
    assert "FT + Gated MLP" in accuracy and "Improvement (Gated MLP - FT)" in accuracy
    resources = (tmp_path / "tables" / "resources.csv").read_text()
    assert "Gated MLP" in resources and "LoRA" in resources
    _uvav(tmp_path, "uvav.compare", str(sweep), "--out", str(tmp_path / "comparison"))
    header = (tmp_path / "comparison" / "comparison_accuracy.csv").read_text().splitlines()[0].split(",")
    assert header[:5] == ["Case", "FT", "LoRA", "Adapter", "Gated MLP"]  # by column order: 10, 20, then 25
    row = (tmp_path / "comparison" / "comparison_accuracy.csv").read_text().splitlines()[1].split(",")
    assert "(n=2)" in row[4] and row[3] == "-"  # two seeds of the plugin; no adapter jobs

    from uvav import load_run
    from uvav.methods import METHODS

    monkeypatch.setenv("UVAV_PLUGINS", PLUGINS)
    run = load_run(jobs[0])  # the registry imports the plugins it does not know yet
    assert run.modes == ["gated_mlp"] and METHODS.get("gated_mlp").new_parameters(run.model)
    result = run.evaluate()
    assert result["matches_reference"] is True and result["accuracy"] == {"gated_mlp": gated["accuracy"]["gated_mlp"]}
    with pytest.raises(Exception, match="generated in code.*av_mnist"):
        run.predict(image=str(tmp_path))  # a generated dataset: nothing to decode files with


def test_unknown_names_list_the_registered_ones(monkeypatch):
    from uvav.data import DATASETS
    from uvav.methods import METHODS

    monkeypatch.delenv("UVAV_PLUGINS", raising=False)
    with pytest.raises(UnknownNameError,
                       match=r"unknown method 'nope': one of \['ft', 'head_only', 'pl', 'cpl', 'lora', 'adapter'"):
        METHODS.get("nope")
    with pytest.raises(UnknownNameError, match="unknown dataset 'nope'.*synthetic"):
        DATASETS.get("nope")
    monkeypatch.setenv("UVAV_PLUGINS", "tests.plugins.does_not_exist")
    with pytest.raises(ImportError, match="UVAV_PLUGINS names module 'tests.plugins.does_not_exist'"):
        METHODS.get("nope")


def test_every_registered_method_and_dataset_has_its_yaml_and_schema():
    """One module + one YAML: each built-in entry has ``conf/<group>/<name>.yaml`` composing its own schema."""
    from uvav.data import DATASETS
    from uvav.methods import METHODS

    from .conftest import compose_config

    for method in METHODS:
        if method.name in ("gated_mlp",):
            continue  # a plugin imported by another test: its YAML is on the plugin's search path
        cfg = compose_config(f"method={method.name}")
        assert cfg.method.name == method.name
        assert set(cfg.method) == {f.name for f in __import__("dataclasses").fields(method.schema)}
    for dataset in DATASETS:
        if dataset.name == "blobs":
            continue
        assert (REPO / "conf" / "data" / f"{dataset.name}.yaml").is_file()


def test_a_second_definition_of_a_name_and_a_disagreeing_schema_are_refused():
    from dataclasses import dataclass

    from uvav.methods import METHODS, FrozenBaseConfig, PeftMethod

    METHODS.get("lora")  # the built-in is registered

    @dataclass
    class LoraConfig(FrozenBaseConfig):
        name: str = "lora"

    @dataclass
    class OtherConfig(FrozenBaseConfig):
        name: str = "other"

    class Impostor(PeftMethod):
        name, schema, title, summary = "lora", LoraConfig, "LoRA", "another LoRA"

    class Mismatched(PeftMethod):
        name, schema, title, summary = "mismatched", OtherConfig, "M", "schema named otherwise"

    with pytest.raises(ValueError, match="'lora' is registered twice"):
        METHODS.register(Impostor())
    with pytest.raises(ValueError, match="must agree"):
        METHODS.register(Mismatched())
    assert type(METHODS.get("lora")).__module__ == "uvav.methods.lora"
