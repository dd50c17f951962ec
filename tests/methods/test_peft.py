"""LoRA and adapter baselines: identity at start, only the new layers (+ head) train, sizes, rebuild, pipeline."""

from __future__ import annotations

import copy

import pytest
import torch

from uvav.cases import CASES, EVAL_CASES
from uvav.checks import validate
from uvav.config import ConfigError
from uvav.methods import METHODS
from uvav.models.classifier import AVClassifier, count_parameters
from uvav.models.peft import AdaptedMlp, LoRALinear
from uvav.models.prompts import PromptBank
from uvav.outputs import fingerprint
from uvav.pipeline import ft_config, run_pipeline
from uvav.train import freeze_for_prompts

from ..conftest import compose_config

torch.set_num_threads(1)


def prepare(model: AVClassifier, method) -> AVClassifier:
    """The method's layers inserted into ``model`` (its registry entry's ``prepare``)."""
    return METHODS.get(method.name).prepare(model, method)


def _model(cfg) -> AVClassifier:
    torch.manual_seed(0)
    return AVClassifier.from_config(cfg.backbone, cfg.data, 5).eval()


def _inputs(cfg, batch: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    audio = torch.randn(batch, cfg.data.target_length, cfg.data.num_mel_bins, generator=gen)
    visual = torch.randn(batch, 3, cfg.data.image_size, cfg.data.image_size, generator=gen)
    return audio, visual


@pytest.mark.parametrize("method", ["lora", "adapter"])
def test_starts_identical_to_ft_and_keeps_original_keys(method):
    cfg = compose_config(f"method={method}")
    ft = _model(cfg)
    peft = prepare(freeze_for_prompts(ft, True), cfg.method)
    audio, visual = _inputs(cfg)
    with torch.no_grad():
        assert torch.equal(ft(audio, visual), peft(audio, visual))  # zero-initialised B / up-projection
    ft_keys, peft_keys = set(ft.state_dict()), set(peft.state_dict())
    assert ft_keys < peft_keys  # original weights keep their keys; only new ones are added
    new = peft_keys - ft_keys
    if method == "lora":
        assert new and all(k.endswith((".lora_a", ".lora_b")) for k in new)
        assert "fusion.0.audio_from_visual.attn.kv.lora_b" in new and "audio.blocks.0.attn.qkv.lora_a" in new
        assert not any(".mlp." in k for k in new)  # default targets: attention projections only
    else:
        assert new and all(".mlp.adapter." in k for k in new)
        assert "fusion.0.visual_from_audio.mlp.adapter.up.weight" in new
    trainable = {n for n, p in peft.named_parameters() if p.requires_grad}
    assert trainable == new | {n for n, _ in peft.head.named_parameters(prefix="head")}
    # an FT state dict loads into the wrapped model with exactly the new layers missing
    missing, unexpected = peft.load_state_dict(ft.state_dict(), strict=False)
    assert set(missing) == new and not unexpected


def test_adapted_mlp_survives_deepcopy_and_applying_twice_fails():
    cfg = compose_config("method=adapter")
    model = prepare(_model(cfg), cfg.method)
    clone = copy.deepcopy(model)
    mlp = clone.audio.blocks[0].mlp
    assert isinstance(mlp, AdaptedMlp) and mlp._mlp.fc1 is mlp.fc1  # the forward uses the copy's own layers
    assert mlp.fc1 is not model.audio.blocks[0].mlp.fc1
    with pytest.raises(ValueError, match="already"):
        prepare(model, cfg.method)
    lora_cfg = compose_config("method=lora")
    lora = prepare(_model(lora_cfg), lora_cfg.method)
    with pytest.raises(ValueError, match="already"):
        prepare(lora, lora_cfg.method)
    pl = _model(compose_config("method=pl"))
    assert METHODS.get("pl").prepare(pl, compose_config("method=pl").method) is pl  # other methods: unchanged
    assert not any(isinstance(m, (LoRALinear, AdaptedMlp)) for m in pl.modules())


@pytest.mark.parametrize("backbone", ["cavmae_tiny", "cavmae_small"])
def test_parameter_counts(backbone):
    """Sizes follow closed forms (d: width, B: timm blocks, F: fusion layers, r: rank, m: bottleneck,
    S: cases, L: prompt length): LoRA on qkv/proj and q/kv/proj = r d (6 B + 14 F); adapters = (2 d m + m + d)
    (B + 2 F); attention prompts = 4 S L d F. With the defaults (r 4, m 16, S 4, L 4):
    attention prompts < LoRA < adapters for any backbone with B >= 1 blocks per fusion layer."""
    lora_cfg = compose_config(f"backbone={backbone}", "method=lora", tiny=False)
    adapter_cfg = compose_config(f"backbone={backbone}", "method=adapter", tiny=False)
    b = lora_cfg.backbone
    d, blocks, fusion = b.embed_dim, 2 * b.depth + b.shared_depth, b.fusion_depth
    r, m = lora_cfg.method.lora_rank, adapter_cfg.method.adapter_bottleneck
    lora = sum(p.numel() for p in METHODS.get("lora").new_parameters(prepare(_model(lora_cfg), lora_cfg.method)))
    adapter = sum(p.numel() for p in METHODS.get("adapter").new_parameters(
        prepare(_model(adapter_cfg), adapter_cfg.method)))
    prompts = count_parameters(PromptBank(list(CASES), "attention", 4, d, fusion))
    assert lora == r * d * (6 * blocks + 14 * fusion)
    assert adapter == (2 * d * m + m + d) * (blocks + 2 * fusion)
    assert prompts == 4 * len(CASES) * 4 * d * fusion
    assert prompts < lora < adapter
    if backbone == "cavmae_tiny":
        assert (lora, adapter, prompts) == (9728, 12768, 4096)


@pytest.mark.parametrize(
    "override, key",
    [("method.lora_rank=0", "method.lora_rank"), ("method.adapter_bottleneck=-1", "method.adapter_bottleneck"),
     ("method.lora_alpha=0", "method.lora_alpha"), ("method.lora_targets=[attn.qkv,head]", "method.lora_targets"),
     ("method.lora_targets=[]", "method.lora_targets")],
)
def test_bad_sizes_name_the_key(override, key):
    method = key.split(".")[1].split("_")[0]  # lora_* keys belong to method=lora, adapter_* to method=adapter
    with pytest.raises(ConfigError, match=f"'{key}'"):
        validate(compose_config(f"method={method}", override))


def test_a_key_of_another_method_is_rejected_at_composition():
    """Each method has its own schema: LoRA's settings do not exist on an adapter (or FT) run."""
    from hydra.errors import ConfigCompositionException

    for method in ("adapter", "ft", "pl"):
        with pytest.raises(ConfigCompositionException, match="method.lora_rank"):
            compose_config(f"method={method}", "method.lora_rank=8")


def test_configs_validate_and_share_the_pl_ft_model():
    for method in ("lora", "adapter"):
        cfg = compose_config(f"method={method}")
        validate(cfg)
        assert cfg.prompt.kind == "none" and len(cfg.scenario.train_cases) == 4
        validate(compose_config(f"method={method}", "prompt=attention"))  # the prompt group is ignored
        assert fingerprint(ft_config(cfg)) == fingerprint(ft_config(compose_config("method=pl")))


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("peft_cache")  # the FT model is trained once for both methods


@pytest.mark.parametrize("method, head_only", [("lora", True), ("adapter", False)])
def test_pipeline_trains_only_new_layers_and_head(method, head_only, shared_cache, tmp_path):
    cfg = compose_config(f"paths.cache_dir={shared_cache}", f"method={method}", "trainer.num_threads=1",
                         f"method.head_only_baseline={str(head_only).lower()}")
    validate(cfg)
    metrics = run_pipeline(cfg, tmp_path / "job")
    assert set(metrics["accuracy"]) == {"ft", method} | ({"head_only"} if head_only else set())
    for name in metrics["accuracy"]:
        assert set(metrics["accuracy"][name]) == set(EVAL_CASES)
        assert set(metrics["val"][name]) == set(EVAL_CASES)
    assert metrics["main_mode"] == method and metrics["objective"]["value"] == metrics["stages"][method]["best_val"]
    stage = metrics["stages"][method]
    assert stage["resources"]["peak_train_memory_bytes"] > 0

    saved = torch.load(tmp_path / "job" / "model.pt", weights_only=True)
    assert saved["bank"] is None
    ft_state = torch.load(shared_cache / "ft" / metrics["stages"]["ft"]["key"] / "model.pt", weights_only=True)
    changed = {k for k in ft_state if not torch.equal(ft_state[k], saved["model"][k])}
    assert changed and all(k.startswith("head.") for k in changed)  # original weights bit-identical

    rebuilt = prepare(AVClassifier.from_config(cfg.backbone, cfg.data, len(saved["class_names"])),
                               cfg.method)
    rebuilt.load_state_dict(saved["model"])  # strict: the rebuilt model has exactly the saved keys
    new_params = METHODS.get(cfg.method.name).new_parameters(rebuilt)
    zero_init = [p for n, p in rebuilt.named_parameters() if n.endswith(("lora_b", "adapter.up.weight"))]
    assert zero_init and all(p.abs().sum() > 0 for p in zero_init)  # trained: B / up moved away from zero
    assert stage["params"]["trainable"] == sum(p.numel() for p in new_params) + count_parameters(rebuilt.head)
    assert stage["params"]["total"] == count_parameters(rebuilt)
