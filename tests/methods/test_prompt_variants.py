"""Issue 15's prompt variants: deep and shared-block prompts, input-conditioned prompts (method=cpl), frozen-base
methods on a pretrained base (method.base=pretrained), training at a missing rate, and the variant table."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from uvav.cases import CASE_INDEX, CASES, EVAL_CASES
from uvav.checks import validate
from uvav.config import ConfigError
from uvav.methods import prompt_bank
from uvav.models.classifier import AVClassifier
from uvav.models.prompts import PromptBank
from uvav.outputs import fingerprint
from uvav.pipeline import ft_config
from uvav.reporting.compare import load
from uvav.reporting.variants import best_prompt_variant, table, write
from uvav.scenarios import draw_case, draw_training_case, sample_generator

from ..conftest import TINY, compose_config, run_cli

torch.set_num_threads(1)
DEEP = ("backbone.depth=2", "backbone.shared_depth=1", "prompt=input", "prompt.depth=2", "prompt.shared_depth=1")


def _model(depth: int = 2) -> AVClassifier:
    torch.manual_seed(0)
    return AVClassifier(num_classes=5, target_length=32, num_mel_bins=32, image_size=16, embed_dim=32, num_heads=2,
                        depth=depth, shared_depth=1, fusion_depth=1, patch_size=8, image_patch_size=4).eval()


def _batch(n: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(n, 32, 32, generator=gen), torch.randn(n, 3, 16, 16, generator=gen)


def test_deep_prompts_replace_the_prompt_outputs_of_each_block():
    model = _model()
    bank = PromptBank(CASES, "input", length=3, embed_dim=32, fusion_depth=1, depth=2, shared_depth=1)
    audio, visual = _batch()
    prompts = bank.select("oracle", 3, torch.tensor([0, 1, 3]))
    assert [p.shape for p in prompts.input_audio] == [(3, 3, 32)] * 2 and len(prompts.shared) == 1
    uncertain = bank.select("uncertain", 3)  # every case's set at every prompted block
    assert [p.shape for p in (*uncertain.input_visual, *uncertain.shared)] == [(3, 4 * 3, 32)] * 3
    with torch.no_grad():
        encoder = model.visual
        n = encoder.num_tokens
        x = torch.cat([encoder.embed(visual), prompts.input_visual[0]], dim=1)  # block 0: appended
        x = encoder.blocks[0](x)
        x = encoder.blocks[1](torch.cat([x[:, :n], prompts.input_visual[1]], dim=1))  # block 1: replaced
        assert torch.allclose(model.visual(visual, prompts.input_visual), x[:, :n], atol=1e-6)
        # the shared block's prompts: appended to both modalities' tokens, left out of the pooled mean
        a, v = model.encode(audio, visual, prompts)
        fused = torch.cat(model.fusion[0](a, v), dim=1)
        shared = model.shared[0](torch.cat([fused, prompts.shared[0]], dim=1))[:, : fused.shape[1]]
        expected = model.head(model.norm(shared).mean(dim=1))
        assert torch.allclose(model.classify_encoded(a, v, prompts), expected, atol=1e-5)
        # each place's prompts matter
        before = model(audio, visual, prompts)
        bank.deep_audio[0].add_(torch.randn_like(bank.deep_audio[0]))  # (a constant would vanish in LayerNorm)
        assert not torch.allclose(model(audio, visual, bank.select("oracle", 3, torch.tensor([0, 1, 3]))), before)


def test_a_depth_one_bank_keeps_the_state_dict_of_earlier_runs():
    bank = PromptBank(CASES, "both", length=2, embed_dim=32, fusion_depth=1)
    assert set(bank.state_dict()) == {"input_audio", "input_visual", *(
        f"attention.0.{d}_{kv}" for d in ("audio_from_visual", "visual_from_audio") for kv in ("key", "value"))}
    with pytest.raises(ValueError, match="input-level"):
        PromptBank(CASES, "attention", 2, 32, 1, depth=2)
    with pytest.raises(ValueError, match="prompts for 3 blocks"):
        _model(depth=2).audio(torch.zeros(1, 1, 32, 32), [torch.zeros(1, 2, 32)] * 3)


def test_conditioned_prompts_are_a_per_sample_mixture_from_the_input():
    model = _model()
    bank = PromptBank([f"pool{i}" for i in range(3)], "both", 2, 32, 1, depth=2, router_dim=4 * 32,
                      case_names=CASES)
    audio, visual = _batch(4)
    audio[1] = 0.0  # sample 1: audio missing
    query = model.input_summary(audio, visual)
    assert query.shape == (4, 128)
    assert query[1, 32:64].abs().max() == 0  # a missing modality's patch embeddings do not vary
    weights = bank.weights(query)
    assert weights.shape == (4, 3) and torch.allclose(weights.sum(1), torch.ones(4))
    prompts = bank.select("conditioned", 4, query=query)
    expected = torch.einsum("bs,sld->bld", weights, bank.deep_visual[0])
    assert torch.allclose(prompts.input_visual[1], expected, atol=1e-6)
    assert prompts.attention[0]["audio_from_visual"][0].shape == (4, 2, 32)
    with torch.no_grad():  # a sample's prediction does not depend on the rest of its batch
        together = model(audio, visual, prompts)
        alone = model(audio[2:3], visual[2:3], bank.select("conditioned", 1, query=query[2:3]))
        assert torch.allclose(together[2:3], alone, atol=1e-5)
    with pytest.raises(ValueError, match="untrained"):  # pool sets belong to no case
        bank.select("oracle", 1, torch.tensor([0]))
    with pytest.raises(ValueError, match="router"):
        PromptBank(CASES, "input", 2, 32, 1).select("conditioned", 1, query=query[:1])


def test_missing_rate_draws_complete_at_one_minus_the_rate():
    cases = list(CASES)
    for i in range(50):  # no rate: the uniform draw of earlier versions, draw for draw
        assert draw_training_case(cases, None, sample_generator("t", i)) == draw_case(cases, sample_generator("t", i))
    complete = CASE_INDEX["complete"]
    for rate in (0.0, 0.3, 0.9, 1.0):
        drawn = [draw_training_case(cases, rate, sample_generator("t", rate, i)) for i in range(3000)]
        share = sum(c != complete for c in drawn) / len(drawn)
        assert abs(share - rate) < 0.03, (rate, share)
        corrupted = [c for c in drawn if c != complete]
        if rate >= 0.9:  # the corrupted cases stay uniform
            assert all(abs(corrupted.count(CASE_INDEX[c]) / len(corrupted) - 1 / 3) < 0.04 for c in CASES[1:])


@pytest.mark.parametrize("overrides, key", [
    (("prompt.depth=3",), "prompt.depth"),  # cavmae_tiny in TINY has one block per encoder
    (("backbone.depth=2", "prompt=attention", "prompt.depth=2"), "prompt.kind"),
    (("prompt=input", "prompt.shared_depth=1"), "prompt.shared_depth"),  # no shared block
    (("scenario.missing_rate=1.5",), "scenario.missing_rate"),
    (("method=ft", "scenario.missing_rate=0.5"), "scenario.train_cases"),  # FT trains on complete only
    (("method.base=posttrained",), "method.base"),
    (("method.base=pretrained",), "backbone.checkpoint"),
    (("method=cpl", "method.pool=0"), "method.pool"),
    (("method=cpl", "method.cache_features=on"), "method.cache_features"),
])
def test_settings_that_cannot_run_name_their_key(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(compose_config(*overrides))


def test_new_settings_keep_the_keys_of_earlier_jobs_and_models():
    default = compose_config("method=pl")
    ft_key = fingerprint(ft_config(default))
    # a frozen-base method's missing rate leaves its FT base alone; method=ft's own rate makes another model
    assert fingerprint(ft_config(compose_config("method=cpl", "scenario.missing_rate=0.5"))) == ft_key
    ft = fingerprint(ft_config(compose_config("method=ft", "scenario=all")))
    assert fingerprint(ft_config(compose_config("method=ft", "scenario=all", "scenario.missing_rate=0.5"))) != ft
    from uvav.execution import job_key

    assert job_key(compose_config("method=pl", "prompt.depth=1", "method.base=finetuned")) == job_key(default)


@pytest.fixture(scope="module")
def pretrained_checkpoint(tmp_path_factory):
    """A backbone checkpoint in method=pretrain's format (no head), from a tiny model of the test configs."""
    cfg = compose_config(*DEEP)
    torch.manual_seed(3)
    model = AVClassifier.from_config(cfg.backbone, cfg.data, 5)
    path = tmp_path_factory.mktemp("pretrained") / "model.pt"
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    torch.save({"model": state, "kind": "uvav-pretrained-backbone"}, path)
    return path, state


def test_cpl_and_deep_pl_on_a_pretrained_base_train_only_prompts_and_head(pretrained_checkpoint, tmp_path):
    from uvav.api import load_run

    path, backbone = pretrained_checkpoint
    run_cli(tmp_path, "-m", "method=cpl,pl,lora", *TINY, *DEEP, "method.base=pretrained",
            f"backbone.checkpoint={path}", "scenario.missing_rate=0.5")
    jobs, skipped = load([tmp_path / "sweep"], every_config=True)
    assert not skipped
    by_method = {m["method"]: m for m in jobs}
    for number, method in enumerate(("cpl", "pl", "lora")):
        saved = torch.load(tmp_path / "sweep" / str(number) / "model.pt", weights_only=True)
        changed = {k for k in backbone if not torch.equal(backbone[k], saved["model"][k])}
        assert not changed, (method, changed)  # the pretrained weights are bit-identical: nothing fine-tuned
        assert saved["ft_key"] is None
    cpl, pl = by_method["cpl"], by_method["pl"]
    assert "ft" not in cpl["accuracy"] and "ft" not in cpl["stages"]  # no FT model on this base
    assert set(cpl["accuracy"]) == {"head_only", "cpl_conditioned"} and cpl["main_mode"] == "cpl_conditioned"
    assert set(pl["accuracy"]) == {"head_only", "pl_uncertain", "pl_oracle"}
    assert all(set(cpl["accuracy"][k]) == set(EVAL_CASES) for k in cpl["accuracy"])

    run = load_run(tmp_path / "sweep" / "0")  # rebuilt from config and model.pt, router included
    assert run.modes == ["cpl_conditioned"] and run.bank.router is not None
    trainable = sum(p.numel() for p in (*run.bank.parameters(), *run.model.head.parameters()))
    assert cpl["stages"]["cpl"]["params"]["trainable"] == trainable  # pool, router and head only
    pl_bank = prompt_bank(load_run(tmp_path / "sweep" / "1").config)
    assert len(pl_bank.deep_audio) == 1 and len(pl_bank.shared) == 1 and pl_bank.router is None
    assert pl["stages"]["pl"]["params"]["trainable"] == sum(
        p.numel() for p in (*pl_bank.parameters(), *run.model.head.parameters()))  # prompts and head only
    again = run.evaluate(case="mixed", prompts="uncertain")  # the case-unknown setting: conditioned
    assert again["accuracy"]["cpl_conditioned"]["mixed"] == pytest.approx(cpl["accuracy"]["cpl_conditioned"]["mixed"])

    rows = {row["Variant"]: row for row in table(jobs)}
    assert {"Head only", "LoRA r=4", "PL input L=4 depth=2 shared_depth=1, uncertain",
            "Conditioned prompts input L=4 depth=2 shared_depth=1 pool=4"} <= set(rows)
    row = rows["Conditioned prompts input L=4 depth=2 shared_depth=1 pool=4"]
    assert row["Base"] == "pretrained, 1 epochs at lr 0.005, missing rate 0.5" and row["Seeds"] == "0"
    gain = cpl["accuracy"]["cpl_conditioned"]["mixed"] - cpl["accuracy"]["head_only"]["mixed"]
    assert row["Mixed gain over head only (± SE)"] == f"{gain:+.3f}"
    assert row["Meets target"] == "-"  # one seed: no standard error, no verdict
    text = write(jobs, [], tmp_path / "table", [tmp_path])
    assert "Conditioned prompts" in text and (tmp_path / "table" / "variants.csv").exists()
    (base, best), score, folders = best_prompt_variant(jobs)  # chosen on validation: the robustness curves' runs
    assert best in {row["Variant"] for row in rows.values()} and best != "LoRA r=4" and 0 <= score <= 1
    listed = (tmp_path / "table" / "robustness_runs.txt").read_text().split()
    assert [Path(p).resolve() for p in listed] == [Path(f).resolve() for f in folders]
    assert any(Path(f).name == "2" for f in folders)  # LoRA's job on the same base


def test_compare_variants_reads_every_config_once(tmp_path):
    run_cli(tmp_path, "-m", "method=cpl,pl", "prompt=input", *TINY)
    jobs, skipped = load([tmp_path / "sweep"], every_config=True)
    assert sorted(m["method"] for m in jobs) == ["cpl", "pl"] and not skipped
    labels = {row["Variant"] for row in table(jobs)}
    assert labels == {"FT", "Head only", "PL input L=4, oracle", "PL input L=4, uncertain",
                      "Conditioned prompts input L=4 pool=4"}
