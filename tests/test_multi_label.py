"""Multi-label data (AudioSet-style multi-hot labels): BCE training, mAP and per-class AP (scikit-learn, as CAV-MAE)
wherever single-label data reports accuracy, sigmoid probabilities in prediction; single-label data unchanged."""

from __future__ import annotations

import contextlib
import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score

from uvav.config import NoiseConfig
from uvav.data.base import AVData, TensorSplit, stratified_split
from uvav.data.loading import LoaderOptions
from uvav.models.prompts import PromptBank
from uvav.train import Feed, Stage, average_precisions, classification_loss, evaluate_split, fit, freeze_for_prompts

from .conftest import TINY, compose_config, run_cli, tiny_model

CASES = ["complete", "noisy_audio", "noisy_visual", "noise_both"]
CPU = torch.device("cpu")
TRAINER = SimpleNamespace(batch_size=4, eval_batch_size=5, warmup_epochs=1.0, grad_clip=1.0, progress=False)


def multi_hot_split(n: int = 12, classes: int = 5) -> TensorSplit:
    gen = torch.Generator().manual_seed(4)
    labels = (torch.rand(n, classes, generator=gen) < 0.4).float()
    return TensorSplit(torch.randn(n, 32, 32, generator=gen), torch.randn(n, 3, 16, 16, generator=gen), labels)


def test_map_is_sklearns_mean_ap_and_not_accuracy():
    targets = torch.tensor([[1, 0, 0], [0, 1, 1], [1, 1, 0], [0, 0, 0]], dtype=torch.float32)
    scores = torch.tensor([[0.9, 0.1, 0.2], [0.8, 0.7, 0.6], [0.3, 0.6, 0.1], [0.2, 0.9, 0.05]])
    mean_ap, per_class = average_precisions(targets, scores)
    expected = [average_precision_score(targets[:, k].numpy(), scores[:, k].numpy()) for k in range(3)]
    assert per_class == pytest.approx(expected) and mean_ap == pytest.approx(sum(expected) / 3)
    assert per_class == pytest.approx([5 / 6, 7 / 12, 1.0])  # by hand: precision at each positive, averaged
    top1_hit = targets[torch.arange(4), scores.argmax(dim=1)].mean().item()  # 2 of 4: not what mAP says
    assert abs(mean_ap - top1_hit) > 0.3


def test_a_class_without_positives_scores_zero_and_counts_in_the_mean():
    targets = torch.tensor([[1, 0], [0, 0], [1, 0]], dtype=torch.float32)
    mean_ap, per_class = average_precisions(targets, torch.tensor([[0.9, 0.5], [0.1, 0.4], [0.8, 0.3]]))
    assert per_class == [1.0, 0.0] and mean_ap == 0.5  # as CAV-MAE's stats.py (sklearn's AP 0, mean over all)


def test_multi_hot_labels_stay_float_and_split_without_strata():
    split = multi_hot_split(20)
    assert split.labels.dtype == torch.float32 and split.subset(torch.tensor([0, 3])).labels.shape == (2, 5)
    data = AVData(split, split, split, list("abcde"))
    assert data.multi_label and not AVData(*(TensorSplit(split.audio, split.visual, torch.zeros(20)),) * 3,
                                           list("abcde")).multi_label
    keep, held = stratified_split(split.labels, 0.25, seed=1)
    assert len(held) == 5 and len(keep) == 15 and set(keep.tolist()).isdisjoint(held.tolist())
    assert torch.equal(held, stratified_split(split.labels, 0.25, seed=1)[1])
    assert len(data.with_label_fraction(0.5, seed=0).train) == 10


def test_loss_is_bce_for_multi_label_and_cross_entropy_otherwise():
    logits, multi_hot = torch.randn(4, 3), torch.tensor([[1, 0, 1], [0, 1, 0], [0, 0, 0], [1, 1, 1]]).float()
    assert classification_loss(logits, multi_hot, True) == pytest.approx(
        F.binary_cross_entropy_with_logits(logits, multi_hot).item())
    index = torch.tensor([0, 2, 1, 1])
    assert classification_loss(logits, index, False) == pytest.approx(F.cross_entropy(logits, index).item())


def test_cached_prompt_stage_trains_on_multi_hot_labels_and_scores_map(tmp_path):
    torch.manual_seed(0)
    stage = Stage.prompted("pl", freeze_for_prompts(tiny_model(), True), PromptBank(CASES, "attention", 2, 32, 1),
                           CASES, train_mode="oracle", epochs=2, lr=1e-3, weight_decay=0.0, cache_views=1,
                           shares_encodings=True)
    feed = Feed(multi_hot_split(), multi_hot_split(8), NoiseConfig(), LoaderOptions(0), token_dir=tmp_path)
    result = fit(stage, feed, TRAINER, CPU, 0, contextlib.nullcontext)
    scores = evaluate_split(stage, feed.val, NoiseConfig(), 1, ["uncertain", "oracle"], CPU, 5,
                            contextlib.nullcontext, LoaderOptions(0), CASES)
    assert scores.metric == "mAP" and len(scores.per_class["oracle"]["complete"]) == 5
    assert result.best_val == pytest.approx(sum(scores.values["uncertain"].values()) / len(CASES))


def test_single_label_scores_stay_accuracy():
    scores = evaluate_split(Stage.trained("ft", tiny_model(), None, CASES), TensorSplit(
        torch.randn(6, 32, 32), torch.randn(6, 3, 16, 16), torch.tensor([0, 1, 2, 3, 4, 0])), NoiseConfig(), 0,
        ["none"], CPU, 4, contextlib.nullcontext, LoaderOptions(0), ["complete"])
    assert scores.metric == "accuracy" and scores.per_class == {}
    assert scores.values["none"]["complete"] in {k / 6 for k in range(7)}


def test_labels_per_clip_2_makes_the_synthetic_data_multi_label(tmp_path):
    from uvav.data import load_data

    cfg = compose_config("data.labels_per_clip=2", f"paths.cache_dir={tmp_path}")
    data = load_data(cfg.data, str(tmp_path))
    assert data.multi_label and data.train.labels.shape == (96, 8)
    per_clip = data.train.labels.sum(dim=1)
    assert set(per_clip.tolist()) <= {1.0, 2.0} and (per_clip == 2).float().mean() > 0.6  # 7 in 8 have two
    single = load_data(compose_config(f"paths.cache_dir={tmp_path}").data, str(tmp_path))
    assert not single.multi_label and single.train.labels.dtype == torch.long


@pytest.mark.slow
def test_multi_label_run_reports_map_everywhere(tmp_path):
    """FT + head only + PL on multi-label synthetic data: mAP and per-class AP in metrics.json, tables naming mAP,
    load_run().evaluate reproducing the run's numbers, sigmoid probabilities."""
    from uvav import aggregate, compare, inference
    from uvav.api import load_run

    run_cli(tmp_path, *TINY, "data.labels_per_clip=2", "method=pl")
    run_dir = tmp_path / "run"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["metric"] == "mAP"
    assert set(metrics["per_class_ap"]) == set(metrics["accuracy"]) == {"ft", "head_only", "pl_uncertain",
                                                                        "pl_oracle"}
    for mode, per_case in metrics["per_class_ap"].items():
        for case, ap in per_case.items():
            assert len(ap) == 8 and metrics["accuracy"][mode][case] == pytest.approx(sum(ap) / 8)

    run = load_run(run_dir)
    result = run.evaluate(case="all", prompts="all")
    assert result["metric"] == "mAP" and result["matches_reference"] is True
    assert result["per_class_ap"]["pl_oracle"]["mixed"] == metrics["per_class_ap"]["pl_oracle"]["mixed"]

    probs = inference._probabilities(run, run._stage(run.device), torch.randn(3, 64, 128),
                                     torch.randn(3, 3, 32, 32), "uncertain", None, contextlib.nullcontext)
    assert run.multi_label and ((probs > 0) & (probs < 1)).all() and not torch.allclose(probs.sum(1), torch.ones(3))

    aggregate.aggregate([run_dir], tmp_path / "agg", plots=False)
    assert (tmp_path / "agg" / "accuracy.md").read_text().startswith("# Test mAP per case")
    text = compare.write(*compare.load([run_dir]), tmp_path / "cmp", [run_dir])
    assert "Test mAP, mean" in text


def test_labels_per_clip_other_than_1_or_2_is_refused_by_name(tmp_path):
    from uvav.config import ConfigError
    from uvav.data import load_data

    with pytest.raises(ConfigError, match="data.labels_per_clip=3"):
        load_data(compose_config("data.labels_per_clip=3").data, str(tmp_path))
