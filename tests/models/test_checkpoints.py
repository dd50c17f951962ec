"""CAV-MAE checkpoint import: key mapping, position-embedding trim/interpolation, reporting, file loading.

Fake checkpoints use exactly the names of YuanGongND/cav-mae (``module.`` prefix, every block with the
extra ``norm{1,2}_{a,v}``, decoder keys) with small widths; one test uses the real 768-dim shapes for the
embeddings and one block of each kind.
"""

from __future__ import annotations

import pytest
import torch

from uvav.models.backbone import sincos_2d
from uvav.models.classifier import AVClassifier
from uvav.weights.cavmae import (
    ImportReport,
    cavmae_key_to_ours,
    load_cavmae_checkpoint,
    map_cavmae_state_dict,
    resize_pos_embed,
    strip_prefix,
)

DIM, HEADS = 64, 4
BLOCK_LEAVES = {
    "norm1": (), "norm1_a": (), "norm1_v": (), "attn.qkv": (3,), "attn.proj": (1,),
    "norm2": (), "norm2_a": (), "norm2_v": (), "mlp.fc1": (4,), "mlp.fc2": (1,),
}


def _block(prefix: str, dim: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """One CAV-MAE (timm 0.4.5 + modality norms) block with random values."""
    out: dict[str, torch.Tensor] = {}
    for leaf, mult in BLOCK_LEAVES.items():
        if not mult:  # LayerNorm
            out[f"{prefix}.{leaf}.weight"] = torch.randn(dim, generator=gen)
            out[f"{prefix}.{leaf}.bias"] = torch.randn(dim, generator=gen)
        else:
            rows = mult[0] * dim
            cols = dim if leaf != "mlp.fc2" else 4 * dim
            out[f"{prefix}.{leaf}.weight"] = torch.randn(rows, cols, generator=gen)
            out[f"{prefix}.{leaf}.bias"] = torch.randn(rows, generator=gen)
    return out


def fake_cavmae(
    dim: int = DIM, depth: int = 11, audio_tokens: int = 512, label_dim: int | None = None,
    decoder: bool = True, prefix: str = "module.", seed: int = 0,
) -> dict[str, torch.Tensor]:
    """A CAV-MAE state dict (pre-training if ``label_dim`` is None, else fine-tuned with ``mlp_head``)."""
    gen = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {
        "patch_embed_a.proj.weight": torch.randn(dim, 1, 16, 16, generator=gen),
        "patch_embed_a.proj.bias": torch.randn(dim, generator=gen),
        "patch_embed_v.proj.weight": torch.randn(dim, 3, 16, 16, generator=gen),
        "patch_embed_v.proj.bias": torch.randn(dim, generator=gen),
        "modality_a": torch.randn(1, 1, dim, generator=gen),
        "modality_v": torch.randn(1, 1, dim, generator=gen),
        "pos_embed_a": torch.randn(1, audio_tokens, dim, generator=gen),
        "pos_embed_v": torch.randn(1, 196, dim, generator=gen),
    }
    for i in range(depth):
        sd |= _block(f"blocks_a.{i}", dim, gen) | _block(f"blocks_v.{i}", dim, gen)
    sd |= _block("blocks_u.0", dim, gen)
    for norm in ("norm_a", "norm_v", "norm"):
        sd[f"{norm}.weight"] = torch.randn(dim, generator=gen)
        sd[f"{norm}.bias"] = torch.randn(dim, generator=gen)
    if label_dim is not None:
        sd |= {"mlp_head.0.weight": torch.randn(dim, generator=gen),
               "mlp_head.0.bias": torch.randn(dim, generator=gen),
               "mlp_head.1.weight": torch.randn(label_dim, dim, generator=gen),
               "mlp_head.1.bias": torch.randn(label_dim, generator=gen)}
    if decoder:
        dec = dim // 2
        sd |= {"decoder_embed.weight": torch.randn(dec, dim, generator=gen),
               "decoder_embed.bias": torch.randn(dec, generator=gen),
               "mask_token": torch.randn(1, 1, dec, generator=gen),
               "decoder_modality_a": torch.randn(1, 1, dec, generator=gen),
               "decoder_modality_v": torch.randn(1, 1, dec, generator=gen),
               "decoder_pos_embed_a": torch.randn(1, audio_tokens, dec, generator=gen),
               "decoder_pos_embed_v": torch.randn(1, 196, dec, generator=gen),
               "decoder_norm.weight": torch.randn(dec, generator=gen),
               "decoder_norm.bias": torch.randn(dec, generator=gen),
               "decoder_pred_a.weight": torch.randn(256, dec, generator=gen),
               "decoder_pred_a.bias": torch.randn(256, generator=gen),
               "decoder_pred_v.weight": torch.randn(768, dec, generator=gen),
               "decoder_pred_v.bias": torch.randn(768, generator=gen)}
        sd |= {k.replace("blocks_a.0", "decoder_blocks.0"): v
               for k, v in _block("blocks_a.0", dec, gen).items()}
    return {prefix + k: v for k, v in sd.items()}


def small_model(target_length: int = 400, depth: int = 11, num_classes: int = 5, dim: int = DIM,
                heads: int = HEADS, fusion_depth: int = 1) -> AVClassifier:
    torch.manual_seed(0)
    return AVClassifier(num_classes, target_length, 128, 224, embed_dim=dim, num_heads=heads, depth=depth,
                        shared_depth=1, fusion_depth=fusion_depth, patch_size=16, image_patch_size=16)


def expected_name(key: str) -> str | None:
    """Independent statement of the mapping, for checking ``cavmae_key_to_ours`` by name."""
    parts = key.split(".")
    if parts[0] in ("blocks_a", "blocks_v", "blocks_u"):
        if parts[2] in ("norm1_a", "norm1_v", "norm2_a", "norm2_v"):
            return None
        stem = {"blocks_a": "audio.blocks", "blocks_v": "visual.blocks", "blocks_u": "shared"}[parts[0]]
        return ".".join([stem, *parts[1:]])
    simple = {"modality_a": "audio.modality", "modality_v": "visual.modality",
              "pos_embed_a": "audio.pos_embed", "pos_embed_v": "visual.pos_embed",
              "norm.weight": "norm.weight", "norm.bias": "norm.bias"}
    if key in simple:
        return simple[key]
    if key.startswith("patch_embed_a."):
        return "audio." + key.replace("patch_embed_a.", "patch_embed.")
    if key.startswith("patch_embed_v."):
        return "visual." + key.replace("patch_embed_v.", "patch_embed.")
    if key.startswith("mlp_head."):
        return "head." + key[len("mlp_head."):]
    return None


@pytest.fixture(scope="module")
def pretrain_sd() -> dict[str, torch.Tensor]:
    return fake_cavmae()


def test_prefix_stripping_and_markers() -> None:
    assert strip_prefix("module.blocks_a.0.attn.qkv.weight") == "blocks_a.0.attn.qkv.weight"
    assert strip_prefix("module.module.norm.weight") == "norm.weight"
    assert strip_prefix("norm.weight") == "norm.weight"
    assert cavmae_key_to_ours("blocks_u.0.norm1_a.weight") == "<unused>"
    assert cavmae_key_to_ours("blocks_a.3.norm2_v.bias") == "<unused>"
    assert cavmae_key_to_ours("decoder_blocks.0.attn.qkv.weight") == "<ignored>"
    assert cavmae_key_to_ours("mask_token") == "<ignored>"
    assert cavmae_key_to_ours("decoder_pos_embed_a") == "<ignored>"
    assert cavmae_key_to_ours("something_new") is None


def test_all_eleven_blocks_and_embeddings_land_in_the_right_parameters(pretrain_sd) -> None:
    model = small_model(target_length=1024)  # 8 x 64 grid: pos_embed_a loads as is
    fusion_before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("fusion.")}
    mapped, report = map_cavmae_state_dict(pretrain_sd, model)
    model.load_state_dict(mapped, strict=False)
    ours = model.state_dict()

    checked = set()
    for key, value in pretrain_sd.items():
        theirs = key.removeprefix("module.")
        name = expected_name(theirs)
        if name is None:
            continue
        assert torch.equal(ours[name], value), f"{theirs} -> {name}"
        checked.add(name)
    for i in range(11):
        for branch in ("audio", "visual"):
            assert f"{branch}.blocks.{i}.attn.qkv.weight" in checked
            assert f"{branch}.blocks.{i}.mlp.fc2.bias" in checked
    assert "shared.0.norm1.weight" in checked and "norm.bias" in checked
    assert sorted(checked) == sorted(report.loaded)
    assert report.notes == [] and report.mismatched == [] and report.unexpected == []
    # fusion has no CAV-MAE counterpart: untouched and reported missing; head is missing for pre-training
    assert all(torch.equal(ours[k], v) for k, v in fusion_before.items())
    assert set(report.missing) == set(fusion_before) | {"head.0.weight", "head.0.bias", "head.1.weight",
                                                         "head.1.bias"}


def test_decoder_ignored_unused_norms_and_unexpected(pretrain_sd) -> None:
    state = dict(pretrain_sd)
    state["module.some_new_tensor"] = torch.zeros(3)
    model = small_model(depth=2)  # blocks 2..10 have no slot here
    _, report = map_cavmae_state_dict(state, model)
    assert "mask_token" in report.ignored and "decoder_pos_embed_a" in report.ignored
    assert "decoder_blocks.0.attn.qkv.weight" in report.ignored
    assert all(k.startswith("decoder_") or k == "mask_token" for k in report.ignored)
    assert {"norm_a.weight", "norm_v.bias", "blocks_u.0.norm1_a.weight", "blocks_a.0.norm2_v.bias"} <= set(
        report.unused)
    assert "some_new_tensor" in report.unexpected
    assert "blocks_a.10.attn.qkv.weight" in report.unexpected
    assert not any(k.startswith(("decoder_", "mask_token", "norm_")) for k in report.unexpected)
    assert any(k.startswith("fusion.0.audio_from_visual") for k in report.missing)
    text = report.summary()
    assert "fusion.* x" in text and "some_new_tensor" in text and "ignored" in text
    assert "blocks_a.{2..10}.* (108)" in text


def test_trim_to_400_frames_keeps_first_25_time_columns(pretrain_sd) -> None:
    model = small_model(target_length=400)
    assert model.audio.grid == (8, 25)
    mapped, report = map_cavmae_state_dict(pretrain_sd, model)
    model.load_state_dict(mapped, strict=False)
    source = pretrain_sd["module.pos_embed_a"].reshape(8, 64, DIM)
    got = model.audio.pos_embed.reshape(8, 25, DIM)
    for row in range(8):
        assert torch.equal(got[row], source[row, :25])
    assert report.notes == ["pos_embed_a: trimmed from grid 8x64 to 8x25"]
    assert "audio.pos_embed" in report.loaded


def test_interpolate_for_longer_target(pretrain_sd) -> None:
    model = small_model(target_length=2048, depth=1)
    mapped, report = map_cavmae_state_dict(pretrain_sd, model)
    assert mapped["audio.pos_embed"].shape == (1, 1024, DIM) == model.audio.pos_embed.shape
    assert report.notes == ["pos_embed_a: interpolated from grid 8x64 to 8x128"]
    # a table constant along time stays constant per frequency row after bilinear resizing
    per_row = torch.randn(8, 1, DIM).expand(8, 64, DIM).reshape(1, 512, DIM)
    resized = resize_pos_embed(per_row, (8, 64), (8, 128)).reshape(8, 128, DIM)
    torch.testing.assert_close(resized, per_row.reshape(8, 64, DIM)[:, :1].expand(8, 128, DIM))


def test_trimmed_sincos_equals_regenerated() -> None:
    for dim in (DIM, 768):
        full = sincos_2d(dim, 8, 64)  # what CAV-MAE's fixed table is for 1024 frames
        trimmed = resize_pos_embed(full, (8, 64), (8, 25))
        model = AVClassifier(2, 400, 128, 32, embed_dim=dim, num_heads=4, depth=0, fusion_depth=0)
        regenerated = model.audio.pos_embed
        assert regenerated.shape == (1, 200, dim)
        torch.testing.assert_close(trimmed, regenerated, rtol=0, atol=0)


def test_mlp_head_loaded_only_when_shapes_match() -> None:
    model = small_model(depth=1, num_classes=5)
    _, report = map_cavmae_state_dict(fake_cavmae(depth=1, label_dim=5, decoder=False), model)
    assert {"head.0.weight", "head.1.weight", "head.1.bias"} <= set(report.loaded)
    assert report.mismatched == []

    state = fake_cavmae(depth=1, label_dim=527, decoder=False)
    mapped, report = map_cavmae_state_dict(state, model)
    assert ("mlp_head.1.weight", (527, DIM), (5, DIM)) in report.mismatched
    assert "head.1.weight" in report.missing and "head.1.weight" not in mapped
    assert torch.equal(mapped["head.0.weight"], state["module.mlp_head.0.weight"])  # the LayerNorm fits
    assert "mlp_head.1.weight [527, 64] vs ours [5, 64]" in report.summary()


def test_without_prefix_and_input_not_modified() -> None:
    state = fake_cavmae(depth=1, prefix="", decoder=False)
    snapshot = {k: v.clone() for k, v in state.items()}
    model = small_model(depth=1)
    mapped, _ = map_cavmae_state_dict(state, model)
    assert torch.equal(mapped["audio.blocks.0.attn.qkv.weight"], state["blocks_a.0.attn.qkv.weight"])
    assert state.keys() == snapshot.keys() and all(torch.equal(state[k], snapshot[k]) for k in state)


@pytest.mark.parametrize("wrapper", [None, "state_dict", "model"])
def test_load_checkpoint_file(tmp_path, wrapper) -> None:
    state = fake_cavmae(depth=2, label_dim=5)
    path = tmp_path / "cav_mae.pth"
    torch.save(state if wrapper is None else {wrapper: state, "epoch": 3}, path)
    model = small_model(depth=2)
    report = load_cavmae_checkpoint(model, path)
    assert isinstance(report, ImportReport) and report.source == str(path)
    assert torch.equal(model.visual.blocks[1].mlp.fc1.weight, state["module.blocks_v.1.mlp.fc1.weight"])
    assert torch.equal(model.head[1].bias, state["module.mlp_head.1.bias"])
    assert torch.equal(model.audio.pos_embed, state["module.pos_embed_a"].reshape(1, 8, 64, DIM)[:, :, :25]
                       .reshape(1, 200, DIM))
    assert report.num_loaded == len(report.loaded) > 0
    assert all(k.startswith("fusion.") for k in report.missing)
    assert str(path) in report.summary()


def test_bad_files_raise_clear_errors(tmp_path) -> None:
    model = small_model(depth=1)
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_cavmae_checkpoint(model, missing)
    garbage = tmp_path / "garbage.pth"
    garbage.write_text("definitely not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pth"):
        load_cavmae_checkpoint(model, garbage)
    not_sd = tmp_path / "list.pth"
    torch.save([1, 2, 3], not_sd)
    with pytest.raises(ValueError, match="list.pth"):
        load_cavmae_checkpoint(model, not_sd)
    mixed = tmp_path / "mixed.pth"
    torch.save({"epoch": 3, "lr": 0.1}, mixed)
    with pytest.raises(ValueError, match="mixed.pth"):
        load_cavmae_checkpoint(model, mixed)
    unrelated = tmp_path / "unrelated.pth"
    torch.save({"encoder.weight": torch.zeros(2, 2)}, unrelated)
    with pytest.raises(ValueError, match="unrelated.pth"):
        load_cavmae_checkpoint(model, unrelated)


def test_real_cavmae_shapes_for_embeddings_and_one_block_each() -> None:
    """Published names and 768-dim shapes (the embeddings, ``blocks_{a,v,u}.0``, ``norm``, AudioSet head)."""
    gen = torch.Generator().manual_seed(1)
    dim = 768
    state = {
        "module.patch_embed_a.proj.weight": torch.randn(dim, 1, 16, 16, generator=gen),
        "module.patch_embed_a.proj.bias": torch.randn(dim, generator=gen),
        "module.patch_embed_v.proj.weight": torch.randn(dim, 3, 16, 16, generator=gen),
        "module.patch_embed_v.proj.bias": torch.randn(dim, generator=gen),
        "module.modality_a": torch.randn(1, 1, dim, generator=gen),
        "module.modality_v": torch.randn(1, 1, dim, generator=gen),
        "module.pos_embed_a": torch.randn(1, 512, dim, generator=gen),
        "module.pos_embed_v": torch.randn(1, 196, dim, generator=gen),
        "module.norm.weight": torch.randn(dim, generator=gen),
        "module.norm.bias": torch.randn(dim, generator=gen),
        "module.mlp_head.1.weight": torch.randn(527, dim, generator=gen),
    }
    for stem in ("blocks_a.0", "blocks_v.0", "blocks_u.0"):
        state |= {"module." + k: v for k, v in _block(stem, dim, gen).items()}
    assert state["module.blocks_a.0.attn.qkv.weight"].shape == (2304, 768)
    assert state["module.blocks_u.0.mlp.fc1.weight"].shape == (3072, 768)
    model = AVClassifier(10, 400, 128, 224, embed_dim=dim, num_heads=12, depth=1, shared_depth=1,
                         fusion_depth=0, patch_size=16, image_patch_size=16)
    mapped, report = map_cavmae_state_dict(state, model)
    model.load_state_dict(mapped, strict=False)
    assert torch.equal(model.audio.patch_embed.proj.weight, state["module.patch_embed_a.proj.weight"])
    assert torch.equal(model.visual.pos_embed, state["module.pos_embed_v"])
    assert torch.equal(model.audio.pos_embed,
                       state["module.pos_embed_a"].reshape(1, 8, 64, dim)[:, :, :25].reshape(1, 200, dim))
    assert torch.equal(model.shared[0].attn.qkv.weight, state["module.blocks_u.0.attn.qkv.weight"])
    assert torch.equal(model.visual.blocks[0].norm2.bias, state["module.blocks_v.0.norm2.bias"])
    assert report.mismatched == [("mlp_head.1.weight", (527, dim), (10, dim))]
    assert set(report.missing) == {"head.0.weight", "head.0.bias", "head.1.weight", "head.1.bias"}
    assert len(report.unused) == 3 * 8 and report.unexpected == []


def test_full_size_cavmae_base_on_meta_device() -> None:
    """Every published key and shape of a fine-tuned CAV-MAE against ``cavmae_base``, without allocating."""
    with torch.device("meta"):
        state = fake_cavmae(dim=768, depth=11, label_dim=527, decoder=False)
        model = AVClassifier(10, 400, 128, 224, embed_dim=768, num_heads=12, depth=11, shared_depth=1,
                             fusion_depth=1, patch_size=16, image_patch_size=16)
    assert len(state) == 2 * 11 * 20 + 20 + 8 + 6 + 4
    mapped, report = map_cavmae_state_dict(state, model)
    assert mapped["audio.pos_embed"].shape == (1, 200, 768)
    assert report.unexpected == [] and report.notes == ["pos_embed_a: trimmed from grid 8x64 to 8x25"]
    assert [key for key, _, _ in report.mismatched] == ["mlp_head.1.weight", "mlp_head.1.bias"]
    assert len(report.unused) == 23 * 8 + 4
    assert {key.split(".")[0] for key in report.missing} == {"fusion", "head"}
    assert set(report.missing) - {k for k in report.missing if k.startswith("fusion.")} == {
        "head.1.weight", "head.1.bias"}


@pytest.mark.parametrize("preset", ["cavmae_tiny", "cavmae_small"])
def test_each_preset_loads_a_checkpoint_of_its_own_shape_at_another_input_size(preset) -> None:
    """A preset's weights saved at CAV-MAE's input size (1024 frames, 224 px), in uvav's own layout, load into the
    same preset at av_mnist's size (128 frames, 32 px): every tensor but the head, position embeddings resized."""
    from ..conftest import compose_config

    cfg = compose_config(f"backbone={preset}", tiny=False)
    b = cfg.backbone
    torch.manual_seed(1)
    source = AVClassifier(7, 1024, 128, 224, embed_dim=b.embed_dim, num_heads=b.num_heads, depth=b.depth,
                          shared_depth=b.shared_depth, fusion_depth=b.fusion_depth, patch_size=b.patch_size,
                          image_patch_size=b.image_patch_size)
    target = AVClassifier.from_config(b, compose_config(f"backbone={preset}", "experiment=av_mnist",
                                                        "backbone.image_patch_size=8", tiny=False).data, 10)
    mapped, report = map_cavmae_state_dict(source.state_dict(), target)
    assert not report.unexpected and {k for k, _, _ in report.mismatched} == {"head.1.weight", "head.1.bias"}
    assert set(report.missing) == {"head.1.weight", "head.1.bias"}  # 7 vs 10 classes: the head stays new
    assert sorted(report.notes) == ["audio.pos_embed: trimmed from grid 8x64 to 8x8",
                                    "visual.pos_embed: interpolated from grid 28x28 to 4x4"]
    target.load_state_dict(mapped, strict=False)
    assert torch.equal(target.audio.blocks[0].attn.qkv.weight, source.audio.blocks[0].attn.qkv.weight)


def test_audio_grid_rows_follow_the_checkpoints_patch_height() -> None:
    """An 8 px audio patch gives 128 / 8 = 16 frequency rows (not CAV-MAE's 8): trimmed along time only."""
    state = fake_cavmae(decoder=False)
    state["module.patch_embed_a.proj.weight"] = torch.randn(DIM, 1, 8, 8)
    state["module.pos_embed_a"] = sincos_2d(DIM, 16, 128)  # 1024 frames / 8
    model = AVClassifier(5, 512, 128, 224, embed_dim=DIM, num_heads=HEADS, depth=11, shared_depth=1,
                         patch_size=8, image_patch_size=16)
    mapped, report = map_cavmae_state_dict(state, model)
    assert "pos_embed_a: trimmed from grid 16x128 to 16x64" in report.notes
    assert torch.equal(mapped["audio.pos_embed"], sincos_2d(DIM, 16, 64))
