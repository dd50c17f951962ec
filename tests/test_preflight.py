"""The pre-flight memory check (uvav/preflight.py) and the prompt.length bound."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from tests.conftest import compose_config, run_module
from uvav import preflight
from uvav.checks import validate
from uvav.config import ConfigError

RESULTS = Path(__file__).resolve().parents[1] / "results" / "resources"
# the committed resource benchmarks' variants (experiments/resource_benchmark.py) as job overrides
VARIANTS = {"FT": ["method=ft"], "PL input-level": ["method=pl", "prompt=input", "method.cache_features=off"],
            "PL attention-level": ["method=pl", "prompt=attention", "method.cache_features=off"],
            "PL attention-level, cached features": ["method=pl", "prompt=attention", "method.cache_features=on"]}
# the classifier jobs of the committed recipes (experiments/*.sh; method=pretrain trains no classifier)
RECIPES = [
    *(["experiment=av_mnist", f"method={m}"] for m in ("ft", "pl", "lora", "adapter", "cpl")),
    ["experiment=av_mnist", "method=pl", "method.prompt_training=joint"],
    ["experiment=av_mnist", "method=pl", "method.base=pretrained"],
    *(["method=" + m] for m in ("ft", "pl", "lora", "adapter")),
    ["method=pl", "method.cache_features=off"],
    ["data=cavmae_json", "method=pl", "data.num_frames=3", "data.target_length=128", "data.image_size=32",
     "backbone.image_patch_size=4"],
    ["data=urbansound8k_av", "method=ft", "data.target_length=128", "data.image_size=32",
     "backbone.image_patch_size=4"],
    ["data=urbansound8k_av", "backbone=cavmae_tiny", "data.target_length=1024", "data.image_size=224"],
    ["hparams_search=prompt_length", "prompt.length=16"],
]


def _benchmarks() -> list[tuple[str, dict, dict]]:
    out = []
    for path in sorted(RESULTS.glob("*.json")):
        result = json.loads(path.read_text())
        out += [(path.stem, result["meta"], row) for row in result["rows"] if row["name"] in VARIANTS]
    return out


@pytest.mark.parametrize("name,meta,row", _benchmarks(), ids=lambda v: v if isinstance(v, str) else "")
def test_estimate_tracks_the_committed_measured_peaks(name, meta, row):
    """The estimate of the training step within +-25% of every committed resource benchmark (CPU: peak of live
    tensors; CUDA: max_memory_allocated)."""
    sizes = [a for a in meta["command"].split() if a.startswith(("data.target_length=", "data.image_size="))]
    cfg = compose_config(f"backbone={meta['backbone']}", f"trainer.batch_size={meta['batch_size']}", *sizes,
                         *VARIANTS[row["name"]], tiny=False)
    ratio = preflight.estimate(cfg, torch.device(meta["device"]))[-1].train / row["peak_train_memory_bytes"]
    assert 0.75 <= ratio <= 1.25, f"{name} {row['name']}: estimate / measured = {ratio:.2f}"


@pytest.mark.parametrize("overrides", RECIPES, ids=" ".join)
def test_committed_recipes_fit_16_gib(overrides):
    estimates = preflight.estimate(compose_config(*overrides, tiny=False), torch.device("cpu"))
    assert estimates and max(e.total for e in estimates) < 16 * preflight.GIB


@pytest.mark.parametrize("method", ["ft", "pl", "cpl", "lora", "adapter"])
def test_the_paper_experiment_fits_an_80_gb_gpu(method):
    cfg = compose_config("experiment=paper_us8k", f"method={method}", tiny=False)
    estimates = preflight.estimate(cfg, torch.device("cuda"))
    assert 8 * preflight.GIB < max(e.total for e in estimates) < 80e9 - 4 * preflight.GIB  # CUDA context aside


def test_a_step_that_cannot_fit_is_refused_naming_the_settings(caplog):
    caplog.set_level(logging.INFO, logger="uvav.preflight")
    cfg = compose_config()
    estimates = preflight.check(cfg, torch.device("cpu"))  # fits this machine
    assert estimates and "pre-flight memory estimate" in caplog.text
    with pytest.raises(ConfigError, match=r"GiB.*trainer\.batch_size \(32\).*prompt\.length.*trainer\.preflight"):
        preflight.check(cfg, torch.device("cpu"), available=2**20)
    assert preflight.check(compose_config("trainer.preflight=false"), torch.device("cpu"), available=2**20) == []


def test_the_estimate_grows_with_the_batch_and_the_prompts():
    def total(*overrides: str) -> int:
        return max(e.train for e in preflight.estimate(compose_config(*overrides), torch.device("cpu")))

    assert total("trainer.batch_size=64") > 1.5 * total("trainer.batch_size=32")
    assert total("prompt=input", "prompt.length=64") > total("prompt=input", "prompt.length=4")


def test_available_memory_is_read():
    assert 0 < preflight.available_bytes(torch.device("cpu"))


def test_prompt_length_is_bounded_by_the_token_count():
    cfg = compose_config("prompt.length=100000")
    with pytest.raises(ConfigError, match=r"prompt\.length.*at most 64"):  # 4 x the 16 image tokens
        validate(cfg)
    validate(compose_config("prompt.length=64"))


def test_the_cli_refuses_a_job_that_cannot_fit_before_any_work(tmp_path):
    proc = run_module("uvav.run", "method=ft", "trainer.batch_size=100000000",
                      "trainer.device=cpu", *compose_tiny(), f"paths.cache_dir={tmp_path / 'cache'}",
                      f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, check=False, full_error=False)
    assert proc.returncode == 2
    assert "pre-flight" in proc.stderr and "trainer.batch_size (100000000)" in proc.stderr
    assert "prompt.length" not in proc.stderr  # method=ft has no prompts to shorten
    assert not (tmp_path / "cache" / "features").exists()  # refused before the data was built


def compose_tiny() -> list[str]:
    from tests.conftest import TINY

    return [o for o in TINY if not o.startswith("trainer.batch_size")]


def test_skipping_the_check_changes_no_key():
    from uvav.execution import job_key
    from uvav.outputs import fingerprint
    from uvav.pipeline import ft_config

    on, off = compose_config(), compose_config("trainer.preflight=false")
    assert job_key(on) == job_key(off) and fingerprint(ft_config(on)) == fingerprint(ft_config(off))


def test_eval_batch_size_zero_is_as_large_as_the_estimate_fits():
    cfg = compose_config("experiment=paper_us8k", "method=pl", "trainer.eval_batch_size=0", tiny=False)
    gpu = torch.device("cuda")  # only the estimate's precision and the rule read it: nothing runs on it
    sizes = [preflight.eval_batch_size(cfg, gpu, available=gib * preflight.GIB) for gib in (1000, 80, 40, 10)]
    assert sizes[0] == preflight.MAX_EVAL_BATCH and sizes == sorted(sizes, reverse=True) and sizes[-1] < sizes[1]

    def fits(rows: int, gib: int) -> bool:
        return max(e.evaluation for e in preflight.estimate(cfg, gpu, rows)) <= gib * preflight.GIB / 2

    for gib, size in zip((80, 40, 10), sizes[1:], strict=True):  # the largest power of two within half the memory
        assert size & (size - 1) == 0 and fits(size, gib) and not fits(2 * size, gib)
    assert preflight.eval_batch_size(cfg, torch.device("cpu")) == preflight.CPU_EVAL_BATCH
    assert preflight.eval_batch_size(compose_config("trainer.eval_batch_size=7"), gpu) == 7  # a size given is kept
    with pytest.raises(ConfigError, match=r"trainer\.eval_batch_size.*or 0"):
        validate(compose_config("trainer.eval_batch_size=-1"))
