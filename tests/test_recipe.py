"""Every method's schedule, and CAV-MAE's fine-tuning recipe as options (uvav/recipe.py): each value of
experiment=paper_us8k reaches every registered method, and each option computes what CAV-MAE's code computes."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from uvav.checks import validate
from uvav.config import ConfigError, NoiseConfig
from uvav.data.base import TensorSplit
from uvav.data.loading import LoaderOptions
from uvav.execution import job_key
from uvav.methods import METHODS, ft_schedule, schedule
from uvav.pipeline import ft_config, run_pipeline
from uvav.recipe import Recipe, WeightAverage, draw_mix, mix_inputs, soft_targets
from uvav.train import Feed, Stage, classification_loss, fit, recipe_batch, warmup_cosine
from uvav.train import lr_scheduler as stage_scheduler

from .conftest import REPO, compose_config, tiny_model
from .test_registry import SEARCHPATH

PAPER = ("experiment=paper_us8k", "data.root=/data")
CPU = torch.device("cpu")


@pytest.mark.parametrize("name", [method.name for method in METHODS])
def test_paper_us8k_gives_every_registered_method_the_recipes_schedule(name):
    """FT's schedule (10 epochs at 1e-4) for every method's FT model; the seed's PL settings (50 at 1e-4) for every
    frozen-base method's stages, cpl and plugins included; nothing per method to forget."""
    cfg = compose_config(f"method={name}", *PAPER, tiny=False)
    validate(cfg)
    if METHODS.get(name).frozen_base:
        assert schedule(cfg) == (50, 1e-4), f"method={name} does not get frozen.epochs/frozen.lr"
    else:
        assert schedule(cfg) == (10, 1e-4)
    assert ft_schedule(cfg) == (10, 1e-4)
    if METHODS.get(name).classifies:
        assert (ft_config(cfg)["epochs"], ft_config(cfg)["lr"]) == (10, 1e-4)


def test_a_plugin_method_gets_the_recipes_schedule_too():
    """A frozen-base method from outside uvav (tests/plugins/gated_mlp.py) needs no recipe file of its own."""
    code = ("from hydra import compose, initialize_config_dir; from uvav.config import config_dir;"
            "from uvav.checks import register_configs; from uvav.methods import schedule; register_configs();"
            "initialize_config_dir(config_dir(), version_base='1.3').__enter__();"
            f"print(schedule(compose('config', overrides=['method=gated_mlp', {SEARCHPATH!r}, *{list(PAPER)!r}])))")
    env = {**os.environ, "UVAV_PLUGINS": "tests.plugins.gated_mlp", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "(50, 0.0001)", proc.stderr[-2000:]


def test_method_epochs_and_lr_still_set_a_methods_own_stage():
    """Old command lines keep their meaning: ``method.epochs``/``method.lr`` win over ``frozen.*`` and, for
    method=ft, over the trainer's (the FT model of the other methods stays the trainer's)."""
    assert schedule(compose_config("method=cpl", *PAPER, "method.epochs=3", "method.lr=0.01", tiny=False)) == (3, 0.01)
    ft = compose_config("method=ft", *PAPER, "method.epochs=4", tiny=False)
    assert ft_schedule(ft) == (4, 1e-4) and ft_config(ft)["epochs"] == 4
    assert ft_schedule(compose_config("method=pl", *PAPER, "method.epochs=4", tiny=False)) == (10, 1e-4)
    assert schedule(compose_config("method=pl", "frozen.epochs=7", tiny=False)) == (7, 0.005)
    assert schedule(compose_config("method=lora", tiny=False)) == (10, 0.005)  # the defaults, as before


def test_job_keys_see_the_effective_schedule_only():
    """``frozen.*`` is keyed through the resolved ``method.epochs``/``method.lr``: a default job has the key it had
    when pl.yaml said ``epochs: 10, lr: 0.005``; an FT job's key ignores ``frozen.*``."""
    pl = job_key(compose_config("method=pl", tiny=False))
    assert pl == job_key(compose_config("method=pl", "method.epochs=10", "method.lr=0.005", tiny=False))
    assert pl != job_key(compose_config("method=pl", "frozen.epochs=11", tiny=False))
    assert job_key(compose_config("method=ft", tiny=False)) == job_key(
        compose_config("method=ft", "frozen.epochs=11", tiny=False))


def test_paper_us8k_takes_cavmae_vggsound_fine_tuning_recipe():
    cfg = compose_config("method=ft", *PAPER, tiny=False)
    recipe = Recipe.of(cfg.trainer)
    assert recipe == Recipe(optimizer="adam", betas=(0.95, 0.999), lr_schedule="step", lr_step_start=2,
                            lr_step_every=1, lr_step_decay=0.5, mixup=0.5, label_smoothing=0.1, wa_start=3, wa_end=10)
    t = cfg.trainer
    assert (t.weight_decay, t.warmup_epochs, t.grad_clip, t.batch_size, t.head_lr_scale) == (5e-7, 0, 0, 48, 10)


def test_defaults_are_uvavs_own_training():
    """Every recipe option is off by default: AdamW with torch's betas, warm-up + cosine, hard targets, the best
    epoch; the batch passes through untouched (the FT-model key of the default is pinned in test_pipeline)."""
    cfg = compose_config("method=ft")
    assert Recipe.of(cfg.trainer) == Recipe() and not Recipe().soft_targets and not Recipe().averages
    stage = Stage.finetune(tiny_model(), ["complete"], name="ft", epochs=2, lr=1e-3, weight_decay=0.05)
    optimizer = stage.recipe.optimizer_for(stage.param_groups(), stage.lr, stage.weight_decay)
    assert type(optimizer) is torch.optim.AdamW and optimizer.defaults["betas"] == (0.9, 0.999)
    ours = stage_scheduler(optimizer, stage, 5, 1.0)
    other = torch.optim.AdamW(stage.param_groups(), lr=stage.lr)
    reference = warmup_cosine(other, 5, 2, 1.0)
    for _ in range(10):
        assert ours.get_last_lr() == reference.get_last_lr()
        optimizer.step(), ours.step(), other.step(), reference.step()
    inputs, labels = (torch.randn(4, 32, 32), torch.randn(4, 3, 16, 16)), torch.tensor([0, 1, 2, 3])
    out, targets = recipe_batch(stage, inputs, labels, (0, 0, 0, 0))
    assert out is inputs and targets is labels


def test_step_schedule_is_cavmae_multisteplr_per_epoch():
    recipe = Recipe(lr_schedule="step", lr_step_start=2, lr_step_every=1, lr_step_decay=0.5)
    param = torch.nn.Parameter(torch.zeros(1))
    cavmae = torch.optim.lr_scheduler.MultiStepLR(torch.optim.Adam([param], lr=1.0), list(range(2, 1000, 1)), 0.5)
    ours = stage_scheduler(torch.optim.Adam([param], lr=1.0), SimpleNamespace(recipe=recipe, epochs=10), 3, 0.0)
    for epoch in range(10):
        for _ in range(3):  # uvav steps its schedule per optimiser step, CAV-MAE's per epoch
            assert ours.get_last_lr()[0] == pytest.approx(cavmae.get_last_lr()[0]), epoch
            ours.optimizer.step(), ours.step()
        cavmae.optimizer.step(), cavmae.step()
    every3 = Recipe(lr_step_start=1, lr_step_every=3, lr_step_decay=0.1)
    assert [every3.lr_factor(e) for e in range(5)] == pytest.approx([1, 0.1, 0.1, 0.1, 0.01])


def test_targets_are_cavmae_dataloaders():
    """Unmixed: eps/K everywhere, the label set to 1 - eps; mixed: eps/K + lambda (1 - eps) on the sample's label
    and + (1 - lambda)(1 - eps) on the partner's; multi-hot rows the same per positive class."""
    eps, k = 0.1, 4
    mix = SimpleNamespace(mixed=torch.tensor([False, True]), partner=torch.tensor([0, 0]), lam=torch.tensor([1., .7]))
    got = soft_targets(torch.tensor([1, 3]), k, eps, mix)
    assert got[0].tolist() == pytest.approx([0.025, 0.9, 0.025, 0.025])
    assert got[1].tolist() == pytest.approx([0.025, 0.025 + 0.3 * 0.9, 0.025, 0.025 + 0.7 * 0.9])
    multi = soft_targets(torch.tensor([[1., 0., 1., 0.]]), k, eps, None)
    assert multi[0].tolist() == pytest.approx([0.9, 0.025, 0.9, 0.025])
    assert torch.equal(soft_targets(torch.tensor([2]), k, 0.0, None), F.one_hot(torch.tensor([2]), k).float())


def test_mixup_draws_are_seeded_and_beta_10_10():
    a, b = draw_mix(4000, 0.5, torch.Generator().manual_seed(1)), draw_mix(4000, 0.5, torch.Generator().manual_seed(1))
    assert torch.equal(a.lam, b.lam) and torch.equal(a.partner, b.partner)  # a resumed epoch draws the same
    assert a.mixed.float().mean().item() == pytest.approx(0.5, abs=0.03)
    lam = a.lam[a.mixed]
    assert lam.mean().item() == pytest.approx(0.5, abs=0.01)
    assert lam.var().item() == pytest.approx(0.25 / 21, rel=0.15)  # Beta(10, 10): variance 1 / (4 * 21)
    assert torch.all(a.lam[~a.mixed] == 1)
    x = torch.arange(4.).view(4, 1, 1)
    mix = SimpleNamespace(mixed=torch.tensor([True] * 4), partner=torch.tensor([1, 0, 3, 2]), lam=torch.full((4,), .25))
    assert mix_inputs((x,), mix)[0].flatten().tolist() == [0.75, 0.25, 2.75, 2.25]


def test_loss_takes_indices_probabilities_and_multi_hot():
    logits, labels = torch.randn(3, 5), torch.tensor([0, 4, 2])
    hard = classification_loss(logits, labels, multi_label=False)
    assert torch.allclose(hard, classification_loss(logits, F.one_hot(labels, 5).float(), multi_label=False))
    hot = torch.tensor([[1., 0, 1, 0, 0], [0, 0, 0, 0, 1], [0, 1, 0, 0, 0]])
    assert torch.allclose(classification_loss(logits, hot, multi_label=True),
                          torch.nn.BCEWithLogitsLoss()(logits, hot))


def _split(n: int, seed: int) -> TensorSplit:
    gen = torch.Generator().manual_seed(seed)
    return TensorSplit(torch.randn(n, 32, 32, generator=gen), torch.randn(n, 3, 16, 16, generator=gen),
                       torch.randint(0, 5, (n,), generator=gen))


class _StopAfter:
    """A training logger that interrupts the run after an epoch's checkpoint would have been the last written."""

    def __init__(self, epoch: int) -> None:
        self.stop = epoch

    def step(self, *args) -> None:
        pass

    def epoch(self, stage, epoch, values) -> None:
        if epoch == self.stop:
            raise KeyboardInterrupt


def _fit_ft(recipe: Recipe, checkpoint, logger=None):
    torch.manual_seed(0)
    stage = Stage.finetune(tiny_model(), ["complete"], name="ft", epochs=3, lr=1e-3, weight_decay=0.0, recipe=recipe)
    feed = Feed(_split(12, 3), _split(8, 4), NoiseConfig(), LoaderOptions(0))
    trainer = SimpleNamespace(batch_size=4, eval_batch_size=8, warmup_epochs=0.0, grad_clip=0.0, progress=False)
    result = fit(stage, feed, trainer, CPU, seed=0, autocast=contextlib.nullcontext, checkpoint_path=checkpoint,
                 logger=logger)
    return stage, result


def test_weight_average_is_the_mean_of_the_epochs_and_survives_a_resume(tmp_path):
    recipe = Recipe(optimizer="adam", betas=(0.95, 0.999), lr_schedule="step", lr_step_start=1, mixup=0.5,
                    label_smoothing=0.1, wa_start=2, wa_end=3)
    stage, result = _fit_ft(recipe, tmp_path / "a.pt")
    assert result.weight_average["count"] == 2 and result.weight_average["epochs"] == [2, 3]
    saved = torch.load(tmp_path / "a.pt", weights_only=True)
    mean = WeightAverage(saved["weight_average"]).mean()
    assert torch.equal(stage.model.head[-1].weight, mean["model.head.1.weight"])
    assert not torch.equal(mean["model.head.1.weight"], saved["trainable"]["model.head.1.weight"])  # not the last

    with pytest.raises(KeyboardInterrupt):  # stopped inside epoch 2 (after epoch 1's checkpoint, 1 epoch averaged)
        _fit_ft(recipe, tmp_path / "b.pt", logger=_StopAfter(2))
    resumed, again = _fit_ft(recipe, tmp_path / "b.pt")
    for (name, p), q in zip(stage.model.named_parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(p, q), name
    assert again.weight_average == result.weight_average


def test_weight_average_epochs_must_be_ft_epochs():
    with pytest.raises(ConfigError, match="'trainer.wa_end'"):
        validate(compose_config("method=pl", *PAPER, "trainer.epochs=5", tiny=False))
    with pytest.raises(ConfigError, match="'trainer.wa_start'"):
        validate(compose_config("method=ft", "trainer.wa_end=1"))
    validate(compose_config("method=pl", *PAPER, "trainer.epochs=5", "trainer.wa_end=5", tiny=False))
    with pytest.raises(ValueError, match="holds none of its 3 epochs"):  # a stage built without the config checks
        _fit_ft(Recipe(wa_start=4, wa_end=5), None)


def test_ft_job_with_the_whole_recipe_reports_the_averaged_model(tmp_path):
    cfg = compose_config(f"paths.cache_dir={tmp_path / 'cache'}", "method=ft", "trainer.epochs=2", "method.epochs=2",
                         "trainer.optimizer=adam", "trainer.betas=[0.95,0.999]", "trainer.lr_schedule=step",
                         "trainer.mixup=0.5", "trainer.label_smoothing=0.1", "trainer.wa_start=1", "trainer.wa_end=2")
    validate(cfg)
    metrics = run_pipeline(cfg, tmp_path / "job")
    ft = metrics["stages"]["ft"]
    assert ft["weight_average"]["epochs"] == [1, 2] and ft["weight_average"]["count"] == 2
    assert metrics["objective"]["value"] == ft["weight_average"]["val_acc"]
