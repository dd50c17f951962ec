"""CAV-MAE's multi-frame evaluation: a clip's prediction is the mean of its frames' probabilities."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from uvav.train import average_frame_logits

from ..conftest import run_cli
from .test_cavmae_json import MIDS, make_clip, write_json


def test_average_of_probabilities_not_of_logits() -> None:
    frames = [torch.tensor([[0.0, 5.0, 0.0]]), torch.tensor([[1.0, -20.0, 0.0]])]
    mean_p = torch.stack([torch.softmax(f, -1) for f in frames]).mean(0)
    out = average_frame_logits(frames, multi_label=False)
    torch.testing.assert_close(torch.softmax(out, -1), mean_p)
    assert out.argmax().item() == 1 and torch.stack(frames).mean(0).argmax().item() == 0  # logits' mean: 0
    out = average_frame_logits(frames, multi_label=True)
    torch.testing.assert_close(torch.sigmoid(out), torch.stack([torch.sigmoid(f) for f in frames]).mean(0))
    assert average_frame_logits(frames[:1], multi_label=False) is frames[0]


@pytest.mark.slow
def test_a_job_on_every_frame_of_the_test_clips(tmp_path: Path) -> None:
    root = tmp_path / "cav"
    write_json(root / "train.json", [make_clip(root, f"v{c}{k}", c) for c in range(3) for k in range(3)])
    write_json(root / "test.json", [make_clip(root, f"t{c}", c) for c in range(3)])
    (root / "labels.csv").write_text("index,mid\n" + "".join(f"{i},{m}\n" for i, m in enumerate(MIDS)))
    run_cli(tmp_path, "data=cavmae_json", f"data.train_json={root / 'train.json'}", "method=ft",
            f"data.test_json={root / 'test.json'}", f"data.label_csv={root / 'labels.csv'}", "data.target_length=32",
            "data.num_mel_bins=32", "data.image_size=16", "data.num_workers=0", "trainer.epochs=1",
            "trainer.batch_size=4", "trainer.progress=false", "backbone.embed_dim=32", "backbone.num_heads=2",
            "backbone.depth=1", "backbone.patch_size=8", "backbone.image_patch_size=4")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["data_info"]["frames"] == {"stored": 10, "train": "random", "val": "middle", "test": "average"}
    assert set(metrics["accuracy"]["ft"]) >= {"complete", "mixed"}
