"""A frozen-base method's new parameters start from the job's seed, whatever drew from the global generator before
(a resumed FT stage, say)."""

from __future__ import annotations

import torch

from uvav import pipeline

from .conftest import compose_config


def _bank(monkeypatch, tmp_path, draw_before: bool) -> dict[str, torch.Tensor]:
    train_and_eval = pipeline._train_and_eval

    def drawing(ctx, stage, *args):
        if draw_before and stage.name == "head_only":
            torch.rand(17)  # what another history (e.g. a resumed FT stage) leaves in the global generator
        return train_and_eval(ctx, stage, *args)

    with monkeypatch.context() as patch:
        patch.setattr(pipeline, "_train_and_eval", drawing)
        pipeline.run_pipeline(compose_config("method=pl", "seed=2", f"paths.cache_dir={tmp_path / 'cache'}"),
                              tmp_path)
    return torch.load(tmp_path / "model.pt", weights_only=False)["bank"]


def test_prompts_start_from_the_seed_whatever_ran_before(monkeypatch, tmp_path):
    plain, drawn = _bank(monkeypatch, tmp_path / "a", False), _bank(monkeypatch, tmp_path / "b", True)
    assert plain.keys() == drawn.keys() and all(torch.equal(plain[k], drawn[k]) for k in plain)
