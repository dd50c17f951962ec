"""One encoding of val and test per case, shared by FT's evaluation, the head-only baseline and attention-level
prompts: the same numbers as streaming evaluation, the encoders run once per (split, case), the rule lives with the
methods, and the job's timing breakdown."""

from __future__ import annotations

import contextlib
import json

import pytest
import torch

from uvav import pipeline
from uvav.cases import EVAL_CASES
from uvav.config import NoiseConfig
from uvav.data.base import TensorSplit
from uvav.data.loading import EvalSet, LoaderOptions
from uvav.methods import METHODS
from uvav.models.classifier import AVClassifier
from uvav.models.prompts import PromptBank
from uvav.outputs import fingerprint
from uvav.train import SALTS, SharedEncodings, Stage, evaluate_split, freeze_for_prompts
from uvav.train.encoding_store import EncodingStore
from uvav.train.token_cache import TokenCache, encode_into
from uvav.train.unique import UniqueEncoder

from .conftest import compose_config, tiny_model

CPU = torch.device("cpu")


def split(n: int = 10, frames: int = 0) -> TensorSplit:
    gen = torch.Generator().manual_seed(5)
    images = torch.randn(n, *((frames,) if frames else ()), 3, 16, 16, generator=gen)
    return TensorSplit(torch.randn(n, 32, 32, generator=gen), images, torch.randint(0, 5, (n,), generator=gen))


def shared(tmp_path, data: TensorSplit, batch_size: int = 7) -> SharedEncodings:
    return SharedEncodings({"test": data}, NoiseConfig(), CPU, batch_size, contextlib.nullcontext, LoaderOptions(0),
                           tmp_path)


def test_logits_from_the_shared_encodings_equal_the_full_forward_pass_bit_for_bit(tmp_path):
    torch.manual_seed(0)
    model, data = tiny_model().eval(), split()
    encodings = shared(tmp_path, data)
    stage = Stage.trained("ft", model, None, ["complete"], shares_encodings=True)
    encodings.evaluate(stage, "test")
    cache = encodings.caches["test"]
    assert cache.rows == len(data) * len(EVAL_CASES) and cache.dtype == torch.float32
    streamed = LoaderOptions(0).loader(EvalSet(data, NoiseConfig(), EVAL_CASES, SALTS["test"]), 7)
    cached = cache.batches(range(cache.rows), 7, LoaderOptions(0), as_stored=True)
    with torch.inference_mode():
        for (audio, visual, labels, *_), (tokens_a, tokens_v, cached_labels, *_) in zip(streamed, cached, strict=True):
            assert torch.equal(model(audio, visual), model.classify_encoded(tokens_a, tokens_v))
            assert torch.equal(labels, cached_labels)
    encodings.close()
    assert not (tmp_path / "encodings_test").exists()


@pytest.mark.parametrize("frames", [0, 2])
def test_every_sharing_stage_scores_as_streaming_does(tmp_path, frames):
    torch.manual_seed(0)
    base, data = tiny_model(), split(frames=frames)
    head = Stage.frozen("head_only", freeze_for_prompts(base, True), ["complete"], epochs=1, lr=0.1,
                        weight_decay=0.0, shares_encodings=True, shares_features=True)
    with torch.no_grad():  # a head of its own (trained): scored with it on the base's pooled features
        head.model.head[-1].weight.mul_(-3.0)
    bank = PromptBank(list(EVAL_CASES[:4]), "attention", 2, 32, 1)
    prompted = Stage.prompted("pl", freeze_for_prompts(base, True), bank, list(EVAL_CASES[:4]), train_mode="oracle",
                              epochs=1, lr=0.1, weight_decay=0.0, shares_encodings=True)
    ft = Stage.trained("ft", base, None, ["complete"], shares_encodings=True, shares_features=True)
    encodings, pooled_rows = shared(tmp_path, data), [0]
    pool = AVClassifier.pool_encoded

    def counting(self, a, v, prompts=None):
        pooled_rows[0] += a.shape[0]
        return pool(self, a, v, prompts)

    scores = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(AVClassifier, "pool_encoded", counting)
        for stage in (ft, head, prompted):
            streamed = evaluate_split(stage, data, NoiseConfig(), SALTS["test"], stage.eval_modes, CPU, 7,
                                      contextlib.nullcontext, LoaderOptions(0))
            pooled_rows[0] = 0
            scores[stage.name] = encodings.evaluate(stage, "test").values
            assert scores[stage.name] == streamed.values
            # fusion ran for the base's pooled features once (ft), not for the head only (its head reads them)
            rows = len(data) * len(EVAL_CASES) * max(1, frames)
            assert pooled_rows[0] == {"ft": rows, "head_only": 0, "pl": rows * 2}[stage.name]  # pl: two modes
    assert scores["ft"] != scores["head_only"]  # its own head, not the base's
    assert list(encodings.encode_s) == ["test"]  # encoded once, by the first stage
    encodings.close()
    assert not list(tmp_path.glob("pooled_*"))


def test_encoded_frames_are_each_frame_s_encoder_outputs():
    model, data = tiny_model().eval(), split(4, frames=3)
    audio, visual = data.audio, data.visual
    encoder = UniqueEncoder(model)
    with torch.inference_mode():
        a, v = encoder.encode(0, audio, visual, CPU)
        assert v.shape[:2] == (4, 3) and torch.equal(v[:, 1], model.encode(audio, visual[:, 1])[1])
        assert torch.equal(a, model.encode(audio, visual[:, 0])[0])


def test_each_distinct_input_is_encoded_once_with_the_bytes_of_encoding_every_row(tmp_path):
    torch.manual_seed(0)
    model, data = tiny_model().eval(), split(6)
    clean, noisy = data.audio, data.audio + 1.0
    audio = torch.cat([clean, noisy, clean, torch.zeros_like(clean)])  # 4 "cases" of 6 samples
    visual = torch.cat([data.visual, data.visual, data.visual * 0.5, data.visual])
    cache = TokenCache(24, (16, 32), (16, 32), torch.float16, CPU, 0.0, tmp_path / "c")
    encoder = UniqueEncoder(model)
    batches = [(audio[i:i + 5], visual[i:i + 5], torch.zeros(5), torch.zeros(5)) for i in range(0, 20, 5)]
    batches.append((audio[20:], visual[20:], torch.zeros(4), torch.zeros(4)))
    assert encode_into(cache, encoder, batches, CPU, contextlib.nullcontext) == 24
    assert encoder.encoded == {"audio": 6 + 6 + 1, "visual": 6 + 6}  # zeros: one input for every sample
    with torch.inference_mode():
        a, v = model.encode(audio, visual)
    stored_a, stored_v = cache.read(torch.arange(24))
    assert torch.equal(stored_a, a.to(torch.float16)) and torch.equal(stored_v, v.to(torch.float16))


def test_the_rule_lives_with_the_methods_and_stages_that_break_it_are_refused():
    pl = METHODS.get("pl")
    assert pl.shares_encodings(compose_config("method=pl", "prompt=attention"))
    assert not pl.shares_encodings(compose_config("method=pl", "prompt=input"))
    for name in ("cpl", "lora", "adapter"):
        assert not METHODS.get(name).shares_encodings(compose_config(f"method={name}"))
    bank = PromptBank(["complete"], "input", 2, 32, 1)
    with pytest.raises(ValueError, match="claims to share"):
        Stage.prompted("pl", freeze_for_prompts(tiny_model(), True), bank, ["complete"], train_mode="oracle",
                       epochs=1, lr=0.1, weight_decay=0.0, shares_encodings=True)
    fusion_trains = freeze_for_prompts(tiny_model(), True)
    fusion_trains.fusion.requires_grad_(True)
    with pytest.raises(ValueError, match="pooled features"):  # only a stage whose head alone trains shares them
        Stage.frozen("lora", fusion_trains, ["complete"], epochs=1, lr=0.1, weight_decay=0.0, shares_encodings=True,
                     shares_features=True)
    with pytest.raises(ValueError, match="pooled features"):
        Stage(name="pl", model=freeze_for_prompts(tiny_model(), True), train_cases=["complete"], epochs=1,
              bank=PromptBank(["complete"], "attention", 2, 32, 1), shares_encodings=True, shares_features=True)


def _streaming(self, stage, split_name):
    """Context._scores as before sharing: every stage streams and encodes for itself."""
    return evaluate_split(stage, getattr(self.data, split_name), self.noise, SALTS[split_name], stage.eval_modes,
                          self.device, self.cfg.trainer.eval_batch_size, self.autocast, self.options)


def _run_counting_rows(monkeypatch, tmp_path, streaming: bool, *overrides: str,
                       cache_dir=None) -> tuple[dict, int]:
    rows = [0]  # through the audio encoder
    encode = AVClassifier.encode_audio

    def counting(self, audio, prompt=None):
        rows[0] += audio.shape[0]
        return encode(self, audio, prompt)

    with monkeypatch.context() as patch:
        patch.setattr(AVClassifier, "encode_audio", counting)
        if streaming:
            patch.setattr(pipeline.Context, "_scores", _streaming)
        cfg = compose_config("method=pl", "seed=4", f"paths.cache_dir={cache_dir or tmp_path / 'cache'}", *overrides)
        metrics = pipeline.run_pipeline(cfg, tmp_path)
    return metrics, rows[0]


def test_a_pl_job_encodes_each_evaluation_split_once_with_the_same_numbers(monkeypatch, tmp_path):
    shared_metrics, shared_rows = _run_counting_rows(monkeypatch, tmp_path / "shared", streaming=False)
    streamed_metrics, streamed_rows = _run_counting_rows(monkeypatch, tmp_path / "streamed", streaming=True)
    assert shared_metrics["accuracy"] == streamed_metrics["accuracy"]
    assert shared_metrics["val"] == streamed_metrics["val"]
    evaluation_rows = len(EVAL_CASES) * (48 + 48)  # val and test under every case (TINY: 48 each)
    # head only and PL no longer encode for themselves, and a repeated input (a clean modality) is encoded once
    assert streamed_rows - shared_rows > 2 * evaluation_rows


def test_the_job_reports_where_its_time_went(monkeypatch, tmp_path):
    metrics, _ = _run_counting_rows(monkeypatch, tmp_path, streaming=False)
    timing = metrics["timing"]
    assert set(timing["train_s"]) == set(timing["evaluate_s"]) == {"ft", "head_only", "pl"}
    assert set(timing["encode_s"]) == {"test", "val", "head_only_train"}  # PL trains on head only's views
    assert all(s >= 0 for part in ("encode_s", "train_s", "evaluate_s") for s in timing[part].values())
    parts = timing["decode_s"] + sum(sum(timing[p].values()) for p in ("encode_s", "train_s", "evaluate_s"))
    assert parts <= metrics["wall_time_s"]


def test_head_only_and_prompts_train_on_one_set_of_cached_views(monkeypatch, tmp_path):
    from uvav.train import token_cache

    built = []
    build = token_cache.build_caches

    def recording(stage, feed, settings, device, seed, autocast, meter, folder=None, val_tokens=None):
        built.append((stage.name, seed, val_tokens is not None))
        return build(stage, feed, settings, device, seed, autocast, meter, folder, val_tokens)

    monkeypatch.setattr(token_cache, "build_caches", recording)
    metrics, _ = _run_counting_rows(monkeypatch, tmp_path, streaming=False)
    # seed 4: the views of seed + 1, as head only drew them before; its validation set from the shared encodings
    assert built == [("head_only", 4 + 1, True)]
    cached = metrics["stages"]["pl"]["resources"]["cached_features"]
    assert cached["shared_with"] == "head_only" and cached["build_s"] == 0.0
    assert not list(tmp_path.glob("tokens_*"))  # kept in the cache's encodings store, not in the job's folder
    entries = [p.parent for p in (tmp_path / "cache" / "encodings").glob("*/complete")]
    assert sorted(json.loads((e / "spec.json").read_text())["what"] for e in entries) == [
        "test under every case", "training views", "val under every case"]


def test_a_later_job_on_the_same_base_reuses_the_encodings_with_the_numbers_it_would_compute(monkeypatch, tmp_path):
    cache = tmp_path / "cache"
    _run_counting_rows(monkeypatch, tmp_path / "first", False, cache_dir=cache)  # FT model, encodings
    other = ("prompt.length=3",)  # another attention-level PL job on the same FT model (a sweep's next trial)
    reused, reused_rows = _run_counting_rows(monkeypatch, tmp_path / "reused", False, *other, cache_dir=cache)
    fresh, fresh_rows = _run_counting_rows(monkeypatch, tmp_path / "fresh", False, *other, "paths.encodings_gb=0",
                                           cache_dir=cache)
    assert reused_rows == 0 and fresh_rows > 0  # the encoders did not run again
    assert reused["accuracy"] == fresh["accuracy"] and reused["val"] == fresh["val"]
    assert reused["stages"]["head_only"]["best_val"] == fresh["stages"]["head_only"]["best_val"]
    assert "reused_from" in reused["stages"]["head_only"]["resources"]["cached_features"]
    assert not list((tmp_path / "fresh").glob("tokens_*"))  # without the store: the job's own, freed at its end


def _entry(store: EncodingStore, spec: dict, megabytes: int) -> tuple[list[TokenCache], bool]:
    def build(folder):
        cache = TokenCache(megabytes * 2**18 // 8, (8,), (1,), torch.float32, CPU, 0.0, folder / "part")
        cache.write(0, torch.ones(cache.rows, 8), torch.ones(cache.rows, 1), torch.zeros(cache.rows),
                    torch.zeros(cache.rows), torch.zeros(cache.rows))
        return [cache]
    return store.get(spec, build, CPU, 0.0)


def test_the_store_keeps_to_its_disk_budget_sparing_entries_in_use(tmp_path):
    import os

    root = tmp_path / "encodings"
    user = EncodingStore(root, budget_gb=100)  # another job, holding its entry until it ends
    _entry(user, {"n": 0}, 1)
    store = EncodingStore(root, budget_gb=2.5 / 1024)  # 2.5 MB
    (cache,), found = _entry(store, {"n": 1}, 1)
    assert not found and torch.equal(cache.read(torch.tensor([3]))[0], torch.ones(1, 8))
    (again,), found = _entry(store, {"n": 1}, 1)
    assert found and again.rows == cache.rows
    os.utime(root / fingerprint({"n": 1}) / "complete", (1, 1))  # used long ago
    store.close()
    (root / "ab12unfinished").mkdir()  # what a crashed job left: no complete marker
    (root / "ab12unfinished" / "audio.npy").write_bytes(bytes(2**20))
    _entry(store, {"n": 2}, 1)  # 4 MB in all: the unfinished and the least recently used entry go
    left = {p.name for p in root.iterdir() if p.is_dir()}
    assert left == {fingerprint({"n": 0}), fingerprint({"n": 2})}  # {"n": 0} is in use by the other job
    user.close()
    store.close()


def test_a_job_opens_an_entry_another_job_holds_without_waiting_for_it_to_end(tmp_path):
    import threading

    first, second = EncodingStore(tmp_path, 1.0), EncodingStore(tmp_path, 1.0)
    _, found = _entry(first, {"n": 0}, 1)  # built, then held (shared) until this job ends
    got = []
    reader = threading.Thread(target=lambda: got.append(_entry(second, {"n": 0}, 1)[1]), daemon=True)
    reader.start()
    reader.join(timeout=30)
    assert not found and got == [True]  # opened while the first still holds it
    first.close()
    second.close()


def test_a_batch_reads_each_of_its_samples_from_the_store_once():
    data, reads = split(6), []
    sample = data.sample

    def counting(i, *args):
        reads.append(i)
        return sample(i, *args)

    data.sample = counting
    dataset = EvalSet(data, NoiseConfig(), EVAL_CASES, SALTS["test"])
    rows = [row for batch in LoaderOptions(0).loader(dataset, 2 * len(EVAL_CASES)) for row in batch[4].tolist()]
    assert reads == list(range(6))  # once per sample, not once per (sample, case)
    assert rows == list(range(len(EVAL_CASES))) * 6  # a sample's cases are consecutive rows
    assert torch.equal(dataset[len(EVAL_CASES) + 3][1], EvalSet(data, NoiseConfig(), [EVAL_CASES[3]], 0)[1][1])
