"""Experiment configs: ``experiment=paper_us8k`` is the paper's protocol, and runs end to end."""

from __future__ import annotations

import torch

from uvav.outputs import fingerprint
from uvav.pipeline import ft_config, run_pipeline

from .conftest import compose_config
from .data.conftest import make_us8k
from .models.test_checkpoints import fake_cavmae


def test_paper_us8k_is_cavmae_recipe_for_ft_and_the_seeds_pl_settings_for_the_rest():
    """(Every registered method's schedule and the rest of the recipe: tests/test_recipe.py.)"""
    configs = {m: compose_config(f"method={m}", "experiment=paper_us8k", "data.root=/data", tiny=False)
               for m in ("ft", "pl", "cpl", "lora", "adapter")}
    ft = configs["ft"]
    assert (ft.data.name, ft.data.target_length, ft.data.image_size, ft.data.normalize) == \
           ("urbansound8k_av", 1024, 224, "cavmae")
    assert (ft.data.freq_mask, ft.data.time_mask) == (48, 192)  # SpecAugment freqm / timem
    assert (ft.backbone.name, ft.backbone.checkpoint) == ("cavmae_base", "cavmae_scale++")
    assert (ft.trainer.batch_size, ft.trainer.lr, ft.trainer.head_lr_scale, ft.trainer.epochs) == (48, 1e-4, 10, 10)
    assert ft.method.epochs is None  # FT's schedule is the trainer's
    for name in ("pl", "cpl", "lora", "adapter"):
        assert (configs[name].method.epochs, configs[name].method.lr) == (50, 1e-4), name
    keys = {name: fingerprint(ft_config(cfg)) for name, cfg in configs.items()}
    assert len(set(keys.values())) == 1  # one FT model serves every method of a seed
    assert compose_config("method=pl", tiny=False).method.epochs == 10  # without the experiment: the frozen.* default


def test_paper_us8k_runs_ft_and_pl_from_a_checkpoint_on_the_us8k_layout(tmp_path):
    root = tmp_path / "us8k"
    make_us8k(root, per_class=4)
    checkpoint = tmp_path / "stand_in.pth"
    torch.save(fake_cavmae(dim=32, depth=1, decoder=False), checkpoint)  # CAV-MAE's layout, random values
    cfg = compose_config(
        "experiment=paper_us8k", "method=pl", f"data.root={root}", f"backbone.checkpoint={checkpoint}",
        "backbone.embed_dim=32", "backbone.num_heads=2", "backbone.depth=1", "trainer.epochs=1", "method.epochs=1",
        "trainer.wa_start=1", "trainer.wa_end=1",
        "trainer.batch_size=8", "trainer.progress=false", "data.num_workers=0", f"paths.cache_dir={tmp_path / 'c'}",
        tiny=False)
    metrics = run_pipeline(cfg, tmp_path / "job")
    weights = metrics["initial_weights"]
    assert weights["kind"] == "path" and weights["sha256"]
    assert weights["loaded"] > 0 and not weights["mismatched"]
    assert all(k.startswith(("fusion.", "head.")) for k in weights["missing"])  # CAV-MAE has no fusion layer
    assert {"ft", "head_only", "pl_uncertain"} <= set(metrics["accuracy"])
    assert metrics["split"]["train"] + metrics["split"]["val"] + metrics["split"]["test"] == 40
