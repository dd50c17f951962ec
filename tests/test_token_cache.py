"""Cached frozen encoder outputs give the outputs of the full forward pass for the same draws; evaluation
streams, encodes each batch once for frozen stages, and does not depend on batch size or workers."""

from __future__ import annotations

import contextlib

import pytest
import torch

from uvav.config import NoiseConfig
from uvav.data.base import TensorSplit
from uvav.data.loading import LoaderOptions, TrainSet
from uvav.models.prompts import PromptBank
from uvav.resources import ResourceMeter
from uvav.train import Feed, FitSettings, Stage, build_caches, evaluate_split, fit, freeze_for_prompts, logits_for

from .conftest import tiny_model

CASES = ["complete", "noisy_audio", "noisy_visual", "noise_both"]
CPU = torch.device("cpu")
TRAINER = FitSettings(batch_size=4, eval_batch_size=5, warmup_epochs=1.0, grad_clip=1.0, progress=False)


def make_stage(views: int, kind: str = "attention") -> Stage:
    torch.manual_seed(0)
    model = freeze_for_prompts(tiny_model(), train_head=True)
    bank = PromptBank(CASES, kind, 2, 32, 1)
    return Stage.prompted("pl", model, bank, CASES, train_mode="oracle", epochs=1, lr=1e-3, weight_decay=0.0,
                          cache_views=views, shares_encodings=kind == "attention")


def split(n: int = 12) -> TensorSplit:
    gen = torch.Generator().manual_seed(3)
    return TensorSplit(torch.randn(n, 32, 32, generator=gen), torch.randn(n, 3, 16, 16, generator=gen),
                       torch.randint(0, 5, (n,), generator=gen))


def feed(tmp_path, workers: int = 0, dtype: str = "fp32") -> Feed:
    return Feed(split(), split(8), NoiseConfig(), LoaderOptions(workers), token_dir=tmp_path, cache_dtype=dtype)


@pytest.mark.parametrize("dtype, tol", [("fp32", 1e-5), ("fp16", 2e-2)])
def test_cached_views_match_the_uncached_forward_pass(tmp_path, dtype, tol):
    stage, data = make_stage(2), feed(tmp_path, dtype=dtype)
    views, val = build_caches(stage, data, TRAINER, CPU, 0, contextlib.nullcontext, ResourceMeter(CPU))
    assert views.rows == 2 * len(data.train) and val.rows == len(CASES) * len(data.val)
    assert not views.on_device and (tmp_path / "tokens_pl_train" / "audio.npy").is_file()  # CPU: a file
    for view in range(2):
        sample = TrainSet(data.train, data.noise, CASES, 0, view, stream="view")
        items = [sample[i] for i in range(len(data.train))]
        audio, visual = torch.stack([x[0] for x in items]), torch.stack([x[1] for x in items])
        ids = torch.tensor([x[3] for x in items])
        rows = torch.arange(len(items)) + view * len(items)
        assert torch.equal(views.case_ids[rows], ids)
        with torch.no_grad():
            full = logits_for(stage, audio, visual, ids, "oracle")
            tokens_a, tokens_v = (t.float() for t in views.read(rows))
            cached = stage.model.classify_encoded(tokens_a, tokens_v, stage.bank.select("oracle", len(ids), ids))
        torch.testing.assert_close(cached, full, rtol=tol, atol=tol)
    views.close()
    assert not (tmp_path / "tokens_pl_train").exists()


def test_cache_batches_are_the_same_from_workers(tmp_path):
    stage, data = make_stage(2), feed(tmp_path, dtype="fp16")
    views, _ = build_caches(stage, data, TRAINER, CPU, 0, contextlib.nullcontext, ResourceMeter(CPU))
    rows = [5, 0, 17, 3, 9, 22, 1]
    inline = list(views.batches(rows, 3, LoaderOptions(0)))
    workers = list(views.batches(rows, 3, LoaderOptions(2)))
    assert [b[0].shape[0] for b in inline] == [3, 3, 1]
    for x, y in zip(inline, workers, strict=True):
        assert all(torch.equal(p, q) for p, q in zip(x, y, strict=True))
    assert torch.equal(inline[0][0], views.read(torch.tensor(rows[:3]))[0].float())


def test_evaluation_does_not_depend_on_batch_size_or_workers():
    stage, noise = make_stage(0), NoiseConfig()
    one = evaluate_split(stage, split(), noise, 0, ["uncertain", "oracle"], CPU, 5, contextlib.nullcontext,
                         LoaderOptions(0))
    two = evaluate_split(stage, split(), noise, 0, ["uncertain", "oracle"], CPU, 7, contextlib.nullcontext,
                         LoaderOptions(2))
    assert one == two and set(one.values["oracle"]) == {*CASES, "mixed"}


def test_a_long_evaluation_shows_its_progress(capsys):
    stage = make_stage(0)
    quiet = evaluate_split(stage, split(), NoiseConfig(), 0, ["uncertain"], CPU, 6, contextlib.nullcontext,
                           LoaderOptions(0))
    assert "scoring" not in capsys.readouterr().err
    shown = evaluate_split(stage, split(), NoiseConfig(), 0, ["uncertain"], CPU, 6, contextlib.nullcontext,
                           LoaderOptions(0), progress="pl: scoring test")
    err = capsys.readouterr().err
    assert shown == quiet and "pl: scoring test" in err and "/10 " in err  # 12 samples x 5 cases, 6 per batch


@pytest.mark.parametrize("kind, frozen", [("attention", True), ("input", False)])
def test_frozen_stage_encodes_each_batch_once_for_every_mode(monkeypatch, kind, frozen):
    stage = make_stage(0, kind)
    assert stage.encoders_frozen() is frozen
    calls = {"encode": 0}
    encode = stage.model.encode

    def counting(*args, **kwargs):
        calls["encode"] += 1
        return encode(*args, **kwargs)

    monkeypatch.setattr(stage.model, "encode", counting)
    evaluate_split(stage, split(), NoiseConfig(), 0, ["uncertain", "oracle"], CPU, 6, contextlib.nullcontext,
                   LoaderOptions(0))
    batches = 12 * 5 // 6  # 12 samples x 5 cases, 6 per batch
    # frozen: one encoding per batch shared by both modes; otherwise every mode runs the whole forward pass
    assert calls["encode"] == (batches if frozen else 2 * batches)


def test_cached_stage_trains_and_cleans_up(tmp_path):
    stage, data = make_stage(2), feed(tmp_path, dtype="fp16")
    before = [p.clone() for p in stage.bank.parameters()]
    result = fit(stage, data, TRAINER, CPU, 0, contextlib.nullcontext)
    assert result.resources["cached_features"]["train"]["where"] == "file"
    assert result.resources["cached_features"]["val"]["rows"] == len(CASES) * 8
    assert any(not torch.equal(p, q) for p, q in zip(before, stage.bank.parameters(), strict=True))
    assert not list(tmp_path.glob("tokens_*"))  # the token files are removed after the stage


@pytest.mark.parametrize("dtype", ["fp16", "fp32"])
def test_the_cached_validation_set_copied_from_the_shared_encodings_holds_the_bytes_it_would_encode(tmp_path, dtype):
    from uvav.train import SharedEncodings

    stage, data = make_stage(1), feed(tmp_path, dtype=dtype)
    stage.train_cases = ["noisy_visual", "complete", "noise_both"]  # a subset, out of order
    shared = SharedEncodings({"val": data.val}, data.noise, CPU, 3, contextlib.nullcontext, LoaderOptions(0),
                             tmp_path / "shared")
    encoded = build_caches(stage, data, TRAINER, CPU, 0, contextlib.nullcontext, ResourceMeter(CPU))[1]
    data.token_dir = tmp_path / "copied"
    copied = build_caches(stage, data, TRAINER, CPU, 0, contextlib.nullcontext, ResourceMeter(CPU),
                          val_tokens=shared.tokens(stage.model, "val"))[1]
    rows = torch.arange(encoded.rows)
    assert copied.rows == 3 * len(data.val)
    assert all(torch.equal(x, y) for x, y in zip(encoded.read(rows), copied.read(rows), strict=True))
    assert all(torch.equal(x, y) for x, y in zip(encoded.row_info(), copied.row_info(), strict=True))
    shared.close()
