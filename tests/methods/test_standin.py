"""Stand-in tokens for a missing modality: detection of exactly the missing rows, identity at start, what trains,
the stage sharing the base's encodings, and a job end to end."""

from __future__ import annotations

import contextlib

import pytest
import torch

from uvav.cases import CASE_EFFECTS, CASES, EVAL_CASES
from uvav.checks import validate
from uvav.config import ConfigError, NoiseConfig
from uvav.data.base import TensorSplit
from uvav.data.loading import LoaderOptions
from uvav.methods import METHODS
from uvav.models.classifier import AVClassifier, count_parameters
from uvav.models.standin import StandIns, missing_signature
from uvav.pipeline import run_pipeline
from uvav.scenarios import corrupt_audio, corrupt_visual
from uvav.train import SALTS, SharedEncodings, evaluate_split, freeze_for_prompts

from ..conftest import compose_config, tiny_model

torch.set_num_threads(1)
CPU = torch.device("cpu")
MISSING = ("noise.audio=[missing]", "noise.visual=[black]")
AUDIO_NOISE, VISUAL_NOISE = ("gaussian", "time_roll", "freq_mask"), ("gaussian", "blur", "pixelate")


def _entry():
    return METHODS.get(compose_config("method=standin").method.name)


def _with_standins(model: AVClassifier, tolerance: float = 0.01) -> AVClassifier:
    return _entry().prepare(model, compose_config("method=standin", f"method.missing_tolerance={tolerance}").method)


def _corrupted_batch(cfg, n: int = 4):
    """Every combination of (audio: clean, each noise kind, missing) x (image: clean, each noise kind, black) over
    ``n`` samples, with which rows have which modality missing."""
    gen = torch.Generator().manual_seed(3)
    audio = torch.randn(n, cfg.data.target_length, cfg.data.num_mel_bins, generator=gen)
    visual = torch.randn(n, 3, cfg.data.image_size, cfg.data.image_size, generator=gen)
    noise = NoiseConfig()
    audios = [audio] + [torch.stack([corrupt_audio(x, kind, noise, False, gen) for x in audio]) for kind in AUDIO_NOISE]
    visuals = [visual] + [torch.stack([corrupt_visual(x, kind, noise, gen) for x in visual]) for kind in VISUAL_NOISE]
    audios.append(torch.stack([corrupt_audio(x, "missing", noise, False, gen) for x in audio]))
    visuals.append(torch.stack([corrupt_visual(x, "black", noise, gen) for x in visual]))
    rows_a, rows_v, gone_a, gone_v = [], [], [], []
    for i, a in enumerate(audios):
        for j, v in enumerate(visuals):
            rows_a.append(a)
            rows_v.append(v)
            gone_a += [i == len(audios) - 1] * n
            gone_v += [j == len(visuals) - 1] * n
    return torch.cat(rows_a), torch.cat(rows_v), torch.tensor(gone_a), torch.tensor(gone_v)


def _tiny(cfg) -> AVClassifier:
    torch.manual_seed(0)
    return AVClassifier.from_config(cfg.backbone, cfg.data, 5).eval()


def test_detection_marks_exactly_the_missing_rows_not_the_noisy_ones():
    cfg = compose_config("method=standin", *MISSING)
    model = _with_standins(_tiny(cfg))
    audio, visual, gone_a, gone_v = _corrupted_batch(cfg)
    assert 0 < gone_a.sum() < len(gone_a) and 0 < gone_v.sum() < len(gone_v)
    with torch.no_grad():
        a, v = model.encode(audio, visual)
        for tokens in ((a, v), (a.half(), v.half()), (a.bfloat16(), v.bfloat16())):  # fp32, fp16 and bf16 caches
            found_a, found_v = model.standins.missing(*tokens)
            assert torch.equal(found_a, gone_a) and torch.equal(found_v, gone_v)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # encoded under autocast: still exactly those rows
            found = model.standins.missing(*model.encode(audio, visual))
        assert torch.equal(found[0], gone_a) and torch.equal(found[1], gone_v)
        # the signature is the encoders' output of a zero input, whatever the data's size beyond whole patches
        sig_a, sig_v = missing_signature(model)
        assert sig_a.shape == a.shape[1:] and sig_v.shape == v.shape[1:]
        assert torch.equal(sig_a, model.standins.missing_audio)
    with pytest.raises(ValueError, match="tolerance"):
        StandIns(sig_a, sig_v, 1.0)


def test_starts_identical_to_ft_and_only_stand_ins_and_head_train():
    cfg = compose_config("method=standin", *MISSING)
    ft = _tiny(cfg)
    entry = _entry()
    audio, visual, gone_a, gone_v = _corrupted_batch(cfg)
    present = ~(gone_a | gone_v)
    for train_head in (True, False):
        stage = entry.build_stage(cfg, freeze_for_prompts(ft, train_head), CPU)
        model = stage.model.eval()
        with torch.no_grad():
            expected, got = ft(audio, visual), model(audio, visual)
        assert torch.equal(expected[present], got[present])  # nothing replaced: the same computation
        assert torch.allclose(expected, got, atol=1e-5, rtol=1e-5)  # replaced by the signature itself
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        head = {n for n, _ in model.head.named_parameters(prefix="head")} if train_head else set()
        assert trainable == {"standins.audio", "standins.visual"} | head
        assert sum(p.numel() for p in stage.trainable()) == (
            sum(p.numel() for p in entry.new_parameters(model)) + (count_parameters(model.head) if train_head else 0))
        assert stage.shares_encodings and stage.cacheable() and not stage.shares_features
        assert stage.eval_modes == entry.eval_modes == ("none",) and entry.result_keys == [entry.name]
    new = set(model.state_dict()) - set(ft.state_dict())
    assert new == {"standins.audio", "standins.visual", "standins.missing_audio", "standins.missing_visual"}
    with pytest.raises(ValueError, match="already"):
        entry.prepare(model, cfg.method)
    with pytest.raises(ConfigError, match="'method.missing_tolerance'"):
        validate(compose_config("method=standin", "method.missing_tolerance=1.5"))


def test_the_stage_scores_on_the_shared_encodings_as_streaming_does(tmp_path):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(5)
    data = TensorSplit(torch.randn(10, 32, 32, generator=gen), torch.randn(10, 3, 16, 16, generator=gen),
                       torch.randint(0, 5, (10,), generator=gen))
    cfg = compose_config("method=standin", *MISSING)
    stage = _entry().build_stage(cfg, freeze_for_prompts(tiny_model().eval(), True), CPU)
    with torch.no_grad():  # trained stand-ins: far from the signature, so the replacement shows in the scores
        stage.model.standins.audio.normal_(std=3.0, generator=gen)
        stage.model.standins.visual.normal_(std=3.0, generator=gen)
    noise = NoiseConfig(audio=["missing"], visual=["black"])
    encodings = SharedEncodings({"test": data}, noise, CPU, 7, contextlib.nullcontext, LoaderOptions(0), tmp_path)
    streamed = evaluate_split(stage, data, noise, SALTS["test"], stage.eval_modes, CPU, 7, contextlib.nullcontext,
                              LoaderOptions(0))
    assert encodings.evaluate(stage, "test").values == streamed.values
    # the shared tokens' missing rows are exactly those whose case corrupts (here: removes) that modality
    cache = encodings.caches["test"]
    _, case_ids, _ = cache.row_info()
    audio, visual = cache.read(torch.arange(cache.rows))
    found_a, found_v = stage.model.standins.missing(audio, visual)
    effects = torch.tensor([CASE_EFFECTS[CASES[int(c)]] for c in case_ids])
    assert torch.equal(found_a, effects[:, 0]) and torch.equal(found_v, effects[:, 1])
    with torch.no_grad():
        replaced = stage.model.classify_encoded(audio, visual)
        stage.model.standins = None
        assert not torch.allclose(replaced, stage.model.classify_encoded(audio, visual))
    encodings.close()


def test_a_job_trains_the_stand_ins_and_reports_them_in_every_case(tmp_path):
    cfg = compose_config(f"paths.cache_dir={tmp_path / 'cache'}", "method=standin", *MISSING,
                         "trainer.num_threads=1")
    validate(cfg)
    name = cfg.method.name
    metrics = run_pipeline(cfg, tmp_path / "job")
    assert set(metrics["accuracy"]) == {"ft", "head_only", name} and metrics["main_mode"] == name
    for key in metrics["accuracy"]:
        assert set(metrics["accuracy"][key]) == set(EVAL_CASES) and set(metrics["val"][key]) == set(EVAL_CASES)
    stage = metrics["stages"][name]
    assert stage["resources"].get("cached_features")  # trained on the base's cached views

    saved = torch.load(tmp_path / "job" / "model.pt", weights_only=True)
    assert saved["bank"] is None
    ft_state = torch.load(tmp_path / "cache" / "ft" / metrics["stages"]["ft"]["key"] / "model.pt", weights_only=True)
    changed = {k for k in ft_state if not torch.equal(ft_state[k], saved["model"][k])}
    assert changed and all(k.startswith("head.") for k in changed)  # the FT model's weights bit-identical
    rebuilt = _entry().prepare(AVClassifier.from_config(cfg.backbone, cfg.data, len(saved["class_names"])),
                               cfg.method)
    rebuilt.load_state_dict(saved["model"])  # strict: exactly the saved keys
    standins = rebuilt.standins
    assert not torch.equal(standins.audio, standins.missing_audio)  # trained: moved away from the signature
    assert not torch.equal(standins.visual, standins.missing_visual)
    assert stage["params"]["trainable"] == (sum(p.numel() for p in standins.parameters())
                                            + count_parameters(rebuilt.head))
