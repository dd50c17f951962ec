"""The model equals CAV-MAE's own fine-tuning model (``CAVMAEFT``, forward mode 'multimodal') at every stage, on the
reference fixture computed by CAV-MAE's code (``../shared/fixtures/cavmae_reference/model``), whatever timm is
installed: built from a config as a run builds it and loaded as ``backbone.checkpoint`` loads it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.conftest import compose_config, shared_fixture
from uvav.weights import build_model

STAGES = ("audio_embed", "visual_embed", "audio_tokens", "visual_tokens", "shared_tokens", "shared_normed",
          "pooled", "logits")


@pytest.fixture(scope="module")
def reference() -> dict:
    return torch.load(shared_fixture("cavmae_reference", "model", "io.pt"), weights_only=True)


def fixture_model(fusion_depth: int = 0):
    """The fixture's sizes as a preset run config: ``cavmae_base`` at 16-d, 4 heads, 256 frames, 64 px."""
    checkpoint = shared_fixture("cavmae_reference", "model", "checkpoint.pth")
    cfg = compose_config("backbone=cavmae_base", "backbone.embed_dim=16", "backbone.num_heads=4",
                         f"backbone.fusion_depth={fusion_depth}", "data.target_length=256", "data.num_mel_bins=128",
                         "data.image_size=64", f"backbone.checkpoint={checkpoint}", "trainer.progress=false",
                         tiny=False)
    model, weights = build_model(cfg, 5, torch.device("cpu"))
    return model.eval(), weights


def stage_outputs(model, fbank: torch.Tensor, image: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every stage the fixture records, from our modules (forward hooks and the encoders' embedding step)."""
    seen: dict[str, torch.Tensor] = {}

    def keep(name):
        return lambda module, args, out: seen.__setitem__(name, out)

    hooks = [model.audio.register_forward_hook(keep("audio_tokens")),
             model.visual.register_forward_hook(keep("visual_tokens")),
             model.shared[-1].register_forward_hook(keep("shared_tokens")),
             model.norm.register_forward_hook(keep("shared_normed")),
             model.head.register_forward_pre_hook(lambda module, args: seen.__setitem__("pooled", args[0]))]
    with torch.no_grad():
        seen["logits"] = model(fbank, image)
        seen["audio_embed"] = model.audio.embed(fbank.transpose(1, 2).unsqueeze(1))
        seen["visual_embed"] = model.visual.embed(image)
    for hook in hooks:
        hook.remove()
    return seen


def relative_errors(model, reference: dict) -> dict[str, float]:
    ours = stage_outputs(model, reference["fbank"], reference["image"])
    return {name: float((ours[name] - reference[name]).abs().max() / reference[name].abs().max()) for name in STAGES}


def test_every_stage_matches_cavmae_within_the_fixture_tolerance(reference):
    model, weights = fixture_model()
    assert weights["missing"] == [] and weights["unexpected"] == [] and weights["mismatched"] == []
    assert weights["loaded"] == len(model.state_dict())  # every tensor of the model came from the checkpoint
    errors = relative_errors(model, reference)
    assert max(errors.values()) <= 1e-5, errors  # the fixture README's tolerance: 1e-5 x max|ref| per tensor


def test_layer_norms_are_pinned_to_cavmae_eps_not_timm_defaults(reference):
    """Every LayerNorm of the blocks, the final norm and the head has eps 1e-5 (the fixture's config); timm 1.0.16+
    defaults its Block to 1e-6, which moves sample 1 (built to expose eps) by >= 7e-5 of max|ref|."""
    model, _ = fixture_model()
    eps = {round(m.eps, 12) for name, m in model.named_modules() if isinstance(m, nn.LayerNorm)}
    assert eps == {reference["config"]["layernorm_eps_blocks"]}
    for module in model.modules():  # what the model computed before the fix: timm's default eps
        if isinstance(module, nn.LayerNorm) and module is not model.norm and module is not model.head[0]:
            module.eps = 1e-6
    assert relative_errors(model, reference)["logits"] > 1e-5


def test_with_the_papers_fusion_layer_the_encoders_still_match(reference):
    """``fusion_depth=1`` (the preset's default) adds the paper's fusion on top: the encoders are CAV-MAE's."""
    model, weights = fixture_model(fusion_depth=1)
    assert all(key.startswith("fusion.") for key in weights["missing"]) and weights["missing"]
    errors = relative_errors(model, reference)
    assert max(errors[s] for s in ("audio_embed", "visual_embed", "audio_tokens", "visual_tokens")) <= 1e-5
    assert errors["logits"] > 1e-5  # the fusion layer changes what follows
